//! Child processes that die with the test.

use std::process::{Child, Command};

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct Owned {
    name: &'static str,
    child: Child,
}

impl Owned {
    /// Spawn `command`, naming it `name` in errors.
    pub fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("could not start {name}: {e}"))?;
        Ok(Self { name, child })
    }

    /// The child, for reading its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Err(error) = self.child.kill()
        {
            eprintln!("could not kill {}: {error}", self.name);
        }
        if let Err(error) = self.child.wait() {
            eprintln!("could not reap {}: {error}", self.name);
        }
    }
}
