//! When the node steps aside for its owner: everything that decides an automatic pause or a
//! throttle. The owner's own pause and their "Resume anyway" live in [`crate::Node`], which
//! puts the two together into the one state the app shows ([`crate::ActivityState`]).
//!
//! - [`policy`]: the state machine; observations in, the automatic pause and actions out.
//! - [`watcher`]: the thread that makes the observations and publishes the policy's verdict.
//! - [`follower`]: how the worker, the models' memory and the ledger follow the state, and the
//!   watcher's setup from the owner's settings.
//! - the sources it watches: [`games`] (processes on the game list), [`gpu_use`] (other
//!   programs busy on the GPU), [`schedule`] (the owner's weekly windows); the desktop's
//!   fullscreen window and idle time come from `hearth-desktop`, GPU temperature and memory
//!   from telemetry.
//!
//! The policy speaks the node's own model ([`crate::ActivityState`], [`crate::PauseReason`]):
//! there is no second state type to keep in step. A new trigger is a [`policy::Input`] with its
//! rule in the policy, its source in the watcher (or sent in through
//! [`watcher::PolicyInputs`]), its setting, and its [`crate::PauseReason`] with its wording.

pub mod follower;
pub mod games;
pub mod gpu_use;
pub mod policy;
pub mod schedule;
pub mod watcher;
