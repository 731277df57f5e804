//! The embedded demo pool (`pool = "embedded"`, the default setting): a pool in this very
//! process with a demo customer, so a fresh install does real work at once. It is `hearth-pool`'s,
//! compiled in with the `demo-pool` feature, which the tray program turns on; without it the node
//! builds without the pool, and asking for the demo pool is a clear error at start.

use std::path::Path;
use std::time::Duration;

use hearth_inference::ModelStore;
use hearth_protocol::PublicKey;

use crate::running::StartError;

/// A running demo pool; dropping it stops it.
#[cfg(feature = "demo-pool")]
pub type DemoPool = hearth_pool::embedded::EmbeddedPool;

/// A running demo pool: none can exist in a build without the `demo-pool` feature.
#[cfg(not(feature = "demo-pool"))]
#[derive(Debug)]
pub enum DemoPool {}

/// Start the demo pool with its database in `data_dir`, selling the models of `models`, its
/// customer asking every `pace` when given.
#[cfg(feature = "demo-pool")]
pub(crate) async fn start(
    data_dir: &Path,
    models: &ModelStore,
    pace: Option<Duration>,
) -> Result<DemoPool, StartError> {
    hearth_pool::embedded::start(data_dir, models, pace)
        .await
        .map_err(|e| StartError::EmbeddedPool(e.to_string()))
}

/// Start the demo pool: not in this build.
#[cfg(not(feature = "demo-pool"))]
pub(crate) async fn start(
    _data_dir: &Path,
    _models: &ModelStore,
    _pace: Option<Duration>,
) -> Result<DemoPool, StartError> {
    Err(StartError::EmbeddedPool(
        "this build has no embedded pool (the `demo-pool` feature); set `pool` to a pool's URL"
            .into(),
    ))
}

/// The demo pool's URL on loopback.
pub(crate) fn url(pool: &DemoPool) -> String {
    #[cfg(feature = "demo-pool")]
    return pool.url();
    #[cfg(not(feature = "demo-pool"))]
    match *pool {}
}

/// The demo pool's receipt key: it is this very process, so no pin is needed.
pub(crate) fn public_key(pool: &DemoPool) -> PublicKey {
    #[cfg(feature = "demo-pool")]
    return pool.pool().state().pool_key.public_key();
    #[cfg(not(feature = "demo-pool"))]
    match *pool {}
}
