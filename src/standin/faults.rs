//! Faults the stand-in injects in place of, or ahead of, its normal answer.
//!
//! A [`Fault`] names the action it applies to (or any action), how many
//! matching requests it applies to, and what happens to them. Faults are kept
//! in the order they were injected; each request takes the first one that
//! matches its action and still has uses left. A fault is looked up before
//! the request is authenticated or validated, so an injected error reaches
//! the client even when the request itself would have failed.

use std::time::Duration;

/// A failure to inject into the stand-in's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The STS action the fault applies to (`"AssumeRole"`, …); `None` for any.
    pub action: Option<String>,
    /// How many matching requests the fault applies to; `u32::MAX` keeps it
    /// until the faults are cleared.
    pub times: u32,
    /// What happens to a matching request.
    pub kind: FaultKind,
}

/// What an injected fault does to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this STS error (an XML `ErrorResponse`) instead.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Wait this long, then process the request as usual.
    Delay(Duration),
    /// Never answer; the connection stays open until the client gives up or
    /// the stand-in shuts down.
    Hang,
    /// Answer 200 with a body that is not a valid STS XML document.
    Malformed,
}

impl Fault {
    /// A fault that applies once, to any action.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            action: None,
            times: 1,
            kind,
        }
    }

    /// Restricts the fault to requests for `action`.
    pub fn on_action(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    /// Applies the fault to the next `times` matching requests.
    pub fn repeated(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Applies the fault to every matching request until faults are cleared.
    pub fn until_cleared(self) -> Self {
        self.repeated(u32::MAX)
    }

    fn matches(&self, action: &str) -> bool {
        self.times > 0 && self.action.as_deref().is_none_or(|wanted| wanted == action)
    }
}

impl FaultKind {
    /// An STS error answer with the given HTTP status, code and message.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::Error {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// STS's answer when a caller exceeds its request rate.
    pub fn throttling() -> Self {
        Self::error(400, "Throttling", "Rate exceeded")
    }
}

/// The injected faults, in injection order.
#[derive(Debug, Default)]
pub(super) struct FaultQueue {
    faults: Vec<Fault>,
}

impl FaultQueue {
    pub(super) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push(fault);
        }
    }

    pub(super) fn clear(&mut self) {
        self.faults.clear();
    }

    /// Takes one use of the first fault matching `action`, if any.
    pub(super) fn take(&mut self, action: &str) -> Option<FaultKind> {
        let index = self.faults.iter().position(|fault| fault.matches(action))?;
        let fault = &mut self.faults[index];
        let kind = fault.kind.clone();

        if fault.times != u32::MAX {
            fault.times -= 1;
        }
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_used_up_after_its_count() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(FaultKind::Hang).repeated(2));

        assert_eq!(queue.take("AssumeRole"), Some(FaultKind::Hang));
        assert_eq!(queue.take("GetSessionToken"), Some(FaultKind::Hang));
        assert_eq!(queue.take("AssumeRole"), None);
    }

    #[test]
    fn a_fault_for_one_action_leaves_other_actions_alone() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(FaultKind::Malformed).on_action("AssumeRole"));

        assert_eq!(queue.take("GetCallerIdentity"), None);
        assert_eq!(queue.take("AssumeRole"), Some(FaultKind::Malformed));
    }

    #[test]
    fn faults_apply_in_injection_order() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(FaultKind::throttling()));
        queue.push(Fault::new(FaultKind::Hang));

        assert_eq!(queue.take("AssumeRole"), Some(FaultKind::throttling()));
        assert_eq!(queue.take("AssumeRole"), Some(FaultKind::Hang));
    }

    #[test]
    fn a_fault_until_cleared_never_runs_out() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(FaultKind::Malformed).until_cleared());

        for _ in 0..1000 {
            assert_eq!(queue.take("AssumeRole"), Some(FaultKind::Malformed));
        }
        queue.clear();
        assert_eq!(queue.take("AssumeRole"), None);
    }
}
