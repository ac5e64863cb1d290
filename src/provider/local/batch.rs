//! Concurrent conversations decode together: each conversation's thread hands its next
//! tokens to the [`Batcher`] and waits; whichever thread finds no pass running runs one for
//! everything waiting, so seven conversations take one pass per step instead of seven
//! passes competing for the cores. The weights are read once per step for all of them.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};

use super::LocalError;
use super::net::{Job, Kv, Net};

/// Most tokens in one pass: a long prompt goes through in chunks of this many, which bounds
/// the attention matrices and lets waiting conversations in between.
pub(super) const MAX_ROWS: usize = 256;

#[derive(Default)]
struct State {
    waiting: Vec<(u64, Job)>,
    /// Finished jobs by id, with the pass's error if it failed.
    done: HashMap<u64, (Job, Option<String>)>,
    running: bool,
    next: u64,
}

/// The queue of jobs waiting for the next pass.
#[derive(Default)]
pub(super) struct Batcher {
    state: Mutex<State>,
    finished: Condvar,
}

impl Batcher {
    /// Feeds `tokens` (at most [`MAX_ROWS`]; a `prompt`'s or not, see [`Job::prompt`]) after
    /// `kv` in a pass shared with whatever else is waiting. Returns the cache, with them
    /// appended and the logits after the last, or as it was and the error.
    pub(super) fn feed(&self, net: &Net, kv: Kv, tokens: Vec<u32>, prompt: bool) -> (Kv, Result<Vec<f32>, LocalError>) {
        let job = Job { kv, tokens, prompt, logits: Vec::new() };
        // A job that cannot be fed fails alone, never queued into a pass it would fail.
        if let Err(e) = net.check(&job) {
            return (job.kv, Err(e));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next;
        state.next += 1;
        state.waiting.push((id, job));
        loop {
            if let Some((mut job, failed)) = state.done.remove(&id) {
                return match failed {
                    None => (job.kv, Ok(job.logits)),
                    Some(message) => {
                        let len = job.kv.tokens.len();
                        job.kv.truncate(len);
                        (job.kv, Err(LocalError::Invalid(message)))
                    }
                };
            }
            if state.running {
                state = self.finished.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let (ids, mut jobs) = take_batch(&mut state.waiting);
            drop(state);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.forward(&mut jobs)))
                .unwrap_or_else(|_| Err(LocalError::Invalid("the forward pass panicked".into())));
            let failed = outcome.err().map(|e| e.to_string());
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.running = false;
            state.done.extend(ids.into_iter().zip(jobs.into_iter().map(|job| (job, failed.clone()))));
            self.finished.notify_all();
        }
    }
}

/// The jobs for the next pass, oldest first, up to [`MAX_ROWS`] tokens (always at least one
/// job); the rest wait for the next.
fn take_batch(waiting: &mut Vec<(u64, Job)>) -> (Vec<u64>, Vec<Job>) {
    let mut rows = 0;
    let mut count = 0;
    for (_, job) in waiting.iter() {
        if count > 0 && rows + job.tokens.len() > MAX_ROWS {
            break;
        }
        rows += job.tokens.len();
        count += 1;
    }
    waiting.drain(..count).unzip()
}
