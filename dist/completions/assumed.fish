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
complete -c assumed -n "__fish_assumed_needs_command" -f -a "man" -d 'Print the man page (roff)'
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
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l socket -r -F
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l role -r
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l config -d 'The configuration file' -r -F
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -l log-format -d 'How log lines are written to stderr' -r -f -a "text\t'One human-readable line per event'
json\t'One JSON object per line, fields at the top level'"
complete -c assumed -n "__fish_assumed_using_subcommand credential-process" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c assumed -n "__fish_assumed_using_subcommand status" -l socket -r -F
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
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "serve" -d 'Run the daemon'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "check-config" -d 'Load and check everything `serve` would (configuration, seed, credentials file) without touching the network'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "demo" -d 'Run the daemon against a built-in local STS stand-in, with a generated seed and two-minute sessions; no AWS account needed'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "env" -d 'Print the environment a client needs to use the TCP endpoint'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "credential-process" -d 'Print credential_process JSON for an AWS config profile'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "status" -d 'Show every role\'s health; exit 0 usable, 1 degraded, 2 unreachable'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "man" -d 'Print the man page (roff)'
complete -c assumed -n "__fish_assumed_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo env credential-process status completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
