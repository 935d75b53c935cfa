//! COMMAND as `stint exec --watch` runs it: started, signalled, stopped
//! gracefully and started again, with stint's own SIGTERM and SIGINT
//! passed on.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::commands::CommandError;
use super::env::ChildEnv;
use super::exec::exit_code;

/// The running COMMAND.
pub struct Child {
    process: tokio::process::Child,
}

impl Child {
    /// Starts `command` with `env` added.
    pub fn spawn(command: &[String], env: &ChildEnv) -> Result<Child, CommandError> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| CommandError::Usage("no command given after --".into()))?;
        let process = tokio::process::Command::new(program)
            .args(args)
            .envs(&env.vars)
            .envs(env.git_env())
            // Never left running behind a stint that returned early.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CommandError::Other(format!("cannot run `{program}`: {e}")))?;
        Ok(Child { process })
    }

    /// Waits for it to exit; its exit code (signals as 128 + n).
    pub async fn wait(&mut self) -> Result<u8, CommandError> {
        let status = self
            .process
            .wait()
            .await
            .map_err(|e| CommandError::Other(e.to_string()))?;
        Ok(exit_code(status))
    }

    /// Sends it `signal` (nothing if it is gone).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.process.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit code if it had one.
    pub async fn stop(&mut self, grace: Duration) -> Option<u8> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(status) => status.ok().map(exit_code),
            Err(_) => {
                let _ = self.process.kill().await;
                None
            }
        }
    }
}

/// SIGTERM and SIGINT to stint, passed on to the child.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn new() -> Result<Signals, CommandError> {
        use tokio::signal::unix::{SignalKind, signal};
        let open = |kind| signal(kind).map_err(|e| CommandError::Other(e.to_string()));
        Ok(Signals {
            term: open(SignalKind::terminate())?,
            int: open(SignalKind::interrupt())?,
        })
    }

    /// The next of them to arrive.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
        }
    }
}
