//! Child processes that never outlive the test process.
//!
//! A child is started under `setpriv --pdeathsig TERM`, so the kernel sends it SIGTERM when
//! its parent *thread* exits. Tests run on short-lived threads, so every child is forked from
//! one dedicated thread that lives as long as the process: a test binary that crashes or is
//! killed still takes its API servers and istiods with it.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, Result};

const SETPRIV: &str = "/usr/bin/setpriv";

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> Option<&'static mpsc::Sender<SpawnRequest>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("meshmig-e2e-spawner".into())
                .spawn(move || {
                    for mut request in rx {
                        // The requester may have given up; nothing to do then.
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts `program args` with stdout/stderr into the given files, tied to this process's
/// lifetime where `setpriv` is available.
pub(crate) fn spawn(
    program: &Path,
    args: &[OsString],
    stdout: File,
    stderr: File,
) -> io::Result<Child> {
    let tied = Path::new(SETPRIV).exists();
    let mut command = if tied {
        let mut c = Command::new(SETPRIV);
        c.arg("--pdeathsig").arg("TERM").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    match spawner() {
        Some(tx) if tied => {
            let (reply, response) = mpsc::channel();
            tx.send(SpawnRequest { command, reply })
                .map_err(|_| io::Error::other("the spawner thread has exited"))?;
            response
                .recv()
                .map_err(|_| io::Error::other("the spawner thread did not answer"))?
        }
        _ => command.spawn(),
    }
}

/// SIGTERM, then SIGKILL after `grace`; blocks (used from `Drop`).
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// As [`terminate`], without blocking the runtime.
pub(crate) async fn terminate_async(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `max` bytes of a file, for error messages.
pub(crate) fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).trim().to_string()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Waits until file `out` has a line starting with `marker`, and returns that line. Fails
/// early, with the tail of `err`, if the process exits first.
pub(crate) async fn wait_for_line(
    child: &mut Child,
    out: &Path,
    err: &Path,
    marker: &str,
    what: &str,
    timeout: Duration,
) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(out)
            && let Some(line) = text.lines().find(|l| l.starts_with(marker))
        {
            return Ok(line.to_string());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(Error::Start {
                    what: what.to_string(),
                    message: format!("exited ({status}) before {marker}:\n{}", tail(err, 6000)),
                });
            }
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("checking on {what}"), e)),
        }
        if start.elapsed() > timeout {
            return Err(Error::Start {
                what: what.to_string(),
                message: format!("no {marker} line within {timeout:?}:\n{}", tail(err, 6000)),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
