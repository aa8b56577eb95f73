//! What the S3 server turned out not to implement, remembered for the life
//! of the process: each refusal costs one call per worker, not one per step.
//!
//! s3s-fs has neither ListObjectVersions nor bucket tagging. Before this,
//! every compensation asked for versions before each listing (an error
//! answer, then the plain listing: twice per delete) and every bridge
//! create tried to tag its bucket. Only `NotImplemented` (HTTP 501) is
//! remembered: the server lacks the operation altogether. An answer about
//! one bucket or one request (`MethodNotAllowed`, access denied) is not,
//! and the call is made again next time. A server upgraded in place is
//! asked afresh once the worker restarts.

use std::sync::atomic::{AtomicBool, Ordering};

/// An optional S3 operation the worker uses where the server has it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Feature {
    /// ListObjectVersions: else the plain listing (current objects only).
    Versions,
    /// PutBucketTagging and GetBucketTagging.
    Tagging,
}

#[derive(Debug, Default)]
pub(crate) struct Support {
    no_versions: AtomicBool,
    no_tagging: AtomicBool,
}

impl Support {
    fn flag(&self, feature: Feature) -> &AtomicBool {
        match feature {
            Feature::Versions => &self.no_versions,
            Feature::Tagging => &self.no_tagging,
        }
    }

    /// Whether to try the operation: yes until the server said it lacks it.
    pub(crate) fn has(&self, feature: Feature) -> bool {
        // Relaxed: a racing step that asks once more is harmless.
        !self.flag(feature).load(Ordering::Relaxed)
    }

    pub(crate) fn lacks(&self, feature: Feature) {
        if !self.flag(feature).swap(true, Ordering::Relaxed) {
            tracing::info!(?feature, "the S3 server does not implement this: not asked again by this worker");
        }
    }
}
