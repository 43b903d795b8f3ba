//! `seer-cancel`: one shared "stop now" flag, [`CancelToken`].
//!
//! A turn's answer (`seer-models`' generation loop) and a model download
//! (`seer-store`'s pull) are both long, blocking jobs that run on a thread
//! of their own and must stop when a client cancels. They check the same
//! token type, so the daemon hands one token to whichever job a request
//! started. It lives in a crate of its own, with no dependencies, because
//! neither of those crates may depend on the other: the model code must not
//! pull in HTTP and TLS, and the downloader has no use for burn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared flag that stops a job from another thread.
///
/// Clones are handles to the same flag: cancel one and every clone reports
/// [`is_cancelled`](Self::is_cancelled). A job polls it at points where
/// stopping is cheap (before each forward pass, between reads of a download),
/// so a cancel takes effect within one such step rather than immediately.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, untriggered token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop; it does at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether two handles control the same job (clones of one token), so a
    /// list of running jobs can find and drop the one that ended.
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether [`cancel`](Self::cancel) was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::CancelToken;

    #[test]
    fn starts_untriggered() {
        assert!(!CancelToken::new().is_cancelled());
        assert!(!CancelToken::default().is_cancelled());
    }

    #[test]
    fn cancel_reaches_every_clone() {
        let a = CancelToken::new();
        let b = a.clone();
        b.cancel();
        assert!(a.is_cancelled());
        assert!(b.is_cancelled());
        // Cancelling twice is harmless.
        a.cancel();
        assert!(a.is_cancelled());
    }

    #[test]
    fn same_as_tells_clones_from_other_tokens() {
        let a = CancelToken::new();
        let other = CancelToken::new();
        assert!(a.same_as(&a.clone()));
        assert!(!a.same_as(&other));
        other.cancel();
        assert!(!a.is_cancelled(), "another token's cancel must not leak");
    }

    #[test]
    fn cancel_from_another_thread() {
        let t = CancelToken::new();
        let remote = t.clone();
        std::thread::spawn(move || remote.cancel())
            .join()
            .expect("cancelling thread panicked");
        assert!(t.is_cancelled());
    }
}
