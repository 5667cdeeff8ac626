//! A Stackpad daemon binary started by a test: its own directory, its output in a log file,
//! killed on drop (also when the test fails, and then the tail of its log is printed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running daemon process, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `binary args` in `dir`, writing its output to `dir/<name>.log`.
    pub fn spawn(name: &str, binary: &Path, args: &[&str], dir: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, binary, args, &[], dir)
    }

    /// Like [`Daemon::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        let binary = binary.to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = start(&binary, &args, &env, dir, &log)?;
        Ok(Self {
            name: name.to_owned(),
            log,
            binary,
            args,
            env,
            dir: dir.to_owned(),
            child,
        })
    }

    /// The process id of the running process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or the OOM killer would: no shutdown code runs.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the same binary with the same arguments again (after [`Daemon::kill9`]); its
    /// output goes on at the end of the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("{} is still running: kill it first", self.name);
        }
        self.child = start(&self.binary, &self.args, &self.env, &self.dir, &self.log)?;
        Ok(())
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails with the log's tail if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.tail(40));
        }
        Ok(())
    }

    /// The last `lines` lines of the daemon's output.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `address` accepts TCP connections; fails with the log's tail if the process
    /// exits or `within` passes first.
    pub async fn wait_for_tcp(&mut self, address: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening on {address}:\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {address} within {within:?}:\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn start(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .with_context(|| format!("opening {log:?}"))?;
    // A daemon sees only what the test gives it: the services' `STACKPAD_*` and `DATABASE_URL`
    // variables of the test's environment override config files and would point it at the
    // shared platform's database.
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({})\n{}",
                self.name,
                self.log.display(),
                self.tail(60)
            );
        }
    }
}
