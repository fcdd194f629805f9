# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_assumed_global_optspecs
    string join \n config= log-format= h/help V/version
end

function __fish_assumed_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_assumed_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_assumed_using_subcommand
    set -l cmd (__fish_assumed_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c assumed -n "__fish_assumed_needs_command" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_needs_command" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_needs_command" -s V -l version -d 'Print version'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "serve" -d 'Run the daemon'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "check-config" -d 'Load and check everything `serve` would (configuration, seed, credentials file) without touching the network'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "demo" -d 'Run the daemon against a built-in local STS stand-in, with a generated seed and two-minute sessions; no AWS account needed'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "env" -d 'Print the environment a client needs to use the TCP endpoint'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "credential-process" -d 'Print credential_process JSON for an AWS config profile'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "status" -d 'Show every role\'s health; exit 0 usable, 1 degraded, 2 unreachable'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "man" -d 'Print a man page (roff): assumed(1), or a command\'s own'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "enroll" -d 'Create and enable a virtual MFA device for an IAM user and store its seed'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "resync" -d 'Resynchronise an enabled MFA device with two consecutive codes from its seed'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "disable" -d 'Deactivate and delete an MFA device (after the daemon has moved to another one)'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "policy" -d 'Print the IAM policies this setup needs, as JSON'
complete -c assumed -n "__fish_assumed_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c assumed -n "__fish_assumed_using_subcommand serve" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand serve" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand check-config" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand check-config" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand check-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand demo" -l port -d 'The loopback TCP port to serve on (0: any free port)' -r
complete -c assumed -n "__fish_assumed_using_subcommand demo" -l for -d 'Stop after this long (e.g. "5m"); default: until Ctrl-C' -r
complete -c assumed -n "__fish_assumed_using_subcommand demo" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand demo" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand env" -l role -d 'The role to point at (default: the default role)' -r
complete -c assumed -n "__fish_assumed_using_subcommand env" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand env" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand env" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l socket -d 'The daemon\'s socket (default: listen.unix_socket of --config when it can be read, else /run/assumed/credentials.sock)' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l role -d 'The role to fetch (default: the default role)' -r
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand status" -l socket -d 'The daemon\'s socket (default: listen.unix_socket of --config when it can be read, else /run/assumed/credentials.sock)' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand status" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand status" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand status" -l json -d 'Print the daemon\'s health JSON instead of a table'
complete -c assumed -n "__fish_assumed_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand completions" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand completions" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand man" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand man" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l user -d 'The IAM user the device is for' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l device-name -d 'The device\'s name (default: the user\'s); the policy from `assumed policy` requires it to start with the user\'s name' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l path -d 'The device\'s IAM path' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l seed-out -d 'Where to write the seed (a new file, mode 0600), or - for standard output, to pipe into `systemd-creds encrypt`' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l qr-out -d 'Also write the QR code PNG for a phone app (a new file, mode 0600); it is as secret as the seed' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l verify-role -d 'After enabling, wait for STS to see the device and assume this role once' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l verify-after -d 'How long to wait before --verify-role\'s AssumeRole' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l region -d 'The region for STS (and IAM\'s signing); default: the SDK\'s, else us-east-1' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l iam-endpoint -d 'Call IAM here instead of AWS\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l sts-endpoint -d 'Call STS here instead of the region\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l credentials-file -d 'Sign with the key in this INI credentials file (mode 0600, as for the daemon) instead of the AWS SDK\'s default credential chain' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l profile -d 'The profile in --credentials-file, or of the default chain' -r
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -l use-config -d 'Take the region, STS endpoint and key from the daemon\'s configuration (--config)'
complete -c assumed -n "__fish_assumed_using_subcommand enroll" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l user -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l serial -d 'The device\'s serial number (its ARN)' -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l seed-file -d 'The device\'s seed: a file (mode 0600), or - for standard input' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l region -d 'The region for STS (and IAM\'s signing); default: the SDK\'s, else us-east-1' -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l iam-endpoint -d 'Call IAM here instead of AWS\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l sts-endpoint -d 'Call STS here instead of the region\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l credentials-file -d 'Sign with the key in this INI credentials file (mode 0600, as for the daemon) instead of the AWS SDK\'s default credential chain' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l profile -d 'The profile in --credentials-file, or of the default chain' -r
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand resync" -l use-config -d 'Take the region, STS endpoint and key from the daemon\'s configuration (--config)'
complete -c assumed -n "__fish_assumed_using_subcommand resync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l user -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l serial -d 'The device\'s serial number (its ARN)' -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l seed-file -d 'The device\'s seed, to prove MFA first (the policy from `assumed policy` lets only an MFA session deactivate a device); - reads standard input' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l region -d 'The region for STS (and IAM\'s signing); default: the SDK\'s, else us-east-1' -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l iam-endpoint -d 'Call IAM here instead of AWS\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l sts-endpoint -d 'Call STS here instead of the region\'s endpoint (https, or http to loopback)' -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l credentials-file -d 'Sign with the key in this INI credentials file (mode 0600, as for the daemon) instead of the AWS SDK\'s default credential chain' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l profile -d 'The profile in --credentials-file, or of the default chain' -r
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l yes-really -d 'Confirms that the device is to be removed for good'
complete -c assumed -n "__fish_assumed_using_subcommand disable" -l use-config -d 'Take the region, STS endpoint and key from the daemon\'s configuration (--config)'
complete -c assumed -n "__fish_assumed_using_subcommand disable" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l account -d 'The 12-digit AWS account id' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l user -d 'The IAM user whose key the daemon holds' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l role -d 'The name of the role the daemon assumes' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l max-mfa-age -d 'Also require the MFA proof to be at most this many seconds old (at least mfa.session, when role sessions are chained)' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l partition -d 'The AWS partition of the ARNs' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l document -d 'Print only this document: user-mfa, role-trust or user-assume-role' -r
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand policy" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand policy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "serve" -d 'Run the daemon'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "check-config" -d 'Load and check everything `serve` would (configuration, seed, credentials file) without touching the network'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "demo" -d 'Run the daemon against a built-in local STS stand-in, with a generated seed and two-minute sessions; no AWS account needed'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "env" -d 'Print the environment a client needs to use the TCP endpoint'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "credential-process" -d 'Print credential_process JSON for an AWS config profile'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "status" -d 'Show every role\'s health; exit 0 usable, 1 degraded, 2 unreachable'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "man" -d 'Print a man page (roff): assumed(1), or a command\'s own'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "enroll" -d 'Create and enable a virtual MFA device for an IAM user and store its seed'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "resync" -d 'Resynchronise an enabled MFA device with two consecutive codes from its seed'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "disable" -d 'Deactivate and delete an MFA device (after the daemon has moved to another one)'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "policy" -d 'Print the IAM policies this setup needs, as JSON'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man enroll resync disable policy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
