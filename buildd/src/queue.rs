//! The per-node build queue (pure): at most `max_running` builds at once, the rest wait in the
//! order they came. The manager feeds it events and performs the actions it returns.

use std::collections::VecDeque;

/// What the manager must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueAction {
    /// Start running this build now.
    Start(String),
}

/// Running and waiting builds.
#[derive(Debug, Clone)]
pub struct BuildQueue {
    max_running: usize,
    running: Vec<String>,
    waiting: VecDeque<String>,
}

impl BuildQueue {
    pub fn new(max_running: usize) -> Self {
        Self {
            max_running: max_running.max(1),
            running: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// A build was submitted: start it if a slot is free, else queue it.
    pub fn submit(&mut self, id: &str) -> Vec<QueueAction> {
        self.waiting.push_back(id.to_owned());
        self.fill()
    }

    /// A running build ended (any outcome): its slot goes to the next waiting build.
    pub fn finished(&mut self, id: &str) -> Vec<QueueAction> {
        self.running.retain(|r| r != id);
        self.fill()
    }

    /// Removes a waiting build; `false` if it was not waiting (running or unknown).
    pub fn remove_waiting(&mut self, id: &str) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w != id);
        before != self.waiting.len()
    }

    /// Place in the queue (0 = next), if waiting.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.waiting.iter().position(|w| w == id)
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn fill(&mut self) -> Vec<QueueAction> {
        let mut actions = Vec::new();
        while self.running.len() < self.max_running {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.running.push(next.clone());
            actions.push(QueueAction::Start(next));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(actions: Vec<QueueAction>) -> Vec<String> {
        actions
            .into_iter()
            .map(|QueueAction::Start(id)| id)
            .collect()
    }

    #[test]
    fn runs_at_most_max_and_starts_the_rest_in_order() {
        let mut q = BuildQueue::new(2);
        assert_eq!(started(q.submit("a")), ["a"]);
        assert_eq!(started(q.submit("b")), ["b"]);
        assert!(q.submit("c").is_empty());
        assert!(q.submit("d").is_empty());
        assert_eq!((q.running(), q.waiting()), (2, 2));
        assert_eq!(q.position("c"), Some(0));
        assert_eq!(q.position("d"), Some(1));
        assert_eq!(started(q.finished("b")), ["c"]);
        assert_eq!(q.position("d"), Some(0));
        assert_eq!(started(q.finished("a")), ["d"]);
        assert!(q.finished("c").is_empty());
        assert_eq!((q.running(), q.waiting()), (1, 0));
    }

    #[test]
    fn a_cancelled_waiting_build_never_starts() {
        let mut q = BuildQueue::new(1);
        q.submit("a");
        q.submit("b");
        q.submit("c");
        assert!(q.remove_waiting("b"));
        assert!(!q.remove_waiting("a"), "running builds are not waiting");
        assert_eq!(started(q.finished("a")), ["c"]);
    }

    #[test]
    fn zero_means_one() {
        let mut q = BuildQueue::new(0);
        assert_eq!(started(q.submit("a")), ["a"]);
        assert!(q.submit("b").is_empty());
    }
}
