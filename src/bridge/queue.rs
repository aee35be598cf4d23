//! Per-request ordering: jobs for one request run one at a time and in order, while jobs for
//! different requests run concurrently (bounded by a semaphore in the engine).

use std::collections::{HashMap, VecDeque};

use crate::request::AccessRequest;

/// Work for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// The request as Teleport last reported it (watch PUT or resync listing).
    Put(Box<AccessRequest>),
    /// Teleport deleted the request (expiry): a watch DELETE.
    Delete,
    /// Resync found plugin data without a request; verify it is gone before treating it as deleted.
    Gone,
}

/// Pending jobs per request id. Pure: the engine owns the tasks and the locking.
#[derive(Debug, Default)]
pub struct Queues {
    queues: HashMap<String, VecDeque<Job>>,
}

impl Queues {
    /// Adds a job. A `Put` replaces a `Put` waiting at the tail, since a request snapshot
    /// supersedes an older one. Returns true when the id had no queue, so a worker must start.
    pub fn push(&mut self, id: &str, job: Job) -> bool {
        match self.queues.get_mut(id) {
            Some(queue) => {
                if matches!(job, Job::Put(_)) && matches!(queue.back(), Some(Job::Put(_))) {
                    queue.pop_back();
                }
                queue.push_back(job);
                false
            }
            None => {
                self.queues.insert(id.to_string(), VecDeque::from([job]));
                true
            }
        }
    }

    /// Puts a failed job back in front, unless a newer `Put` already supersedes it.
    pub fn retry(&mut self, id: &str, job: Job) {
        let queue = self.queues.entry(id.to_string()).or_default();
        if matches!(job, Job::Put(_)) && matches!(queue.front(), Some(Job::Put(_))) {
            return;
        }
        queue.push_front(job);
    }

    /// Takes the next job; when none is left the id is forgotten and the worker must stop.
    pub fn pop(&mut self, id: &str) -> Option<Job> {
        let queue = self.queues.get_mut(id)?;
        let job = queue.pop_front();
        if job.is_none() {
            self.queues.remove(id);
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestState;

    fn put(state: RequestState) -> Job {
        Job::Put(Box::new(AccessRequest {
            id: "r".into(),
            user: "u".into(),
            state,
            ..AccessRequest::default()
        }))
    }

    #[test]
    fn first_job_starts_a_worker_and_later_ones_queue() {
        let mut q = Queues::default();
        assert!(q.push("r", put(RequestState::Pending)));
        assert!(!q.push("r", Job::Delete));
        assert!(q.push("other", Job::Delete));
        assert!(!q.push("other", Job::Gone));
    }

    #[test]
    fn newer_put_replaces_a_waiting_put_but_not_across_a_delete() {
        let mut q = Queues::default();
        q.push("r", put(RequestState::Pending));
        q.push("r", put(RequestState::Approved));
        q.push("r", Job::Delete);
        q.push("r", put(RequestState::Denied));
        assert_eq!(q.pop("r"), Some(put(RequestState::Approved)));
        assert_eq!(q.pop("r"), Some(Job::Delete));
        assert_eq!(q.pop("r"), Some(put(RequestState::Denied)));
        assert_eq!(q.pop("r"), None);
        assert!(q.push("r", Job::Gone), "an emptied queue is forgotten");
        assert_eq!(q.pop("r"), Some(Job::Gone));
        assert_eq!(q.pop("r"), None);
    }

    #[test]
    fn a_failed_job_goes_back_in_front_unless_superseded() {
        let mut q = Queues::default();
        q.push("r", put(RequestState::Pending));
        let job = q.pop("r").unwrap();
        q.push("r", Job::Delete);
        q.retry("r", job.clone());
        assert_eq!(q.pop("r"), Some(job.clone()));
        assert_eq!(q.pop("r"), Some(Job::Delete));
        q.push("r", put(RequestState::Approved));
        q.retry("r", job);
        assert_eq!(
            q.pop("r"),
            Some(put(RequestState::Approved)),
            "a newer snapshot replaces the failed one"
        );
        assert_eq!(q.pop("r"), None);
    }
}
