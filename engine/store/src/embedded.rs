//! A private PostgreSQL cluster started from the local PostgreSQL binaries.
//!
//! When no `DATABASE_URL` is given, voicecare runs its own cluster under its
//! data directory: `initdb` once, then `postgres` listening on a unix socket in
//! a directory only we can reach (no TCP port, nothing for other users to find).
//!
//! The server is started through a tiny shell watchdog that holds a pipe from
//! us: when our process exits for any reason (clean exit, Ctrl-C, a crash,
//! SIGKILL), the pipe closes and the watchdog asks PostgreSQL for a fast
//! shutdown. A crashed engine therefore never leaves an orphan server behind,
//! and the next start finds a cleanly shut-down cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::process::{Child, Command};

/// Errors starting or stopping the embedded cluster. Each names what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found in {searched}. \
         Install them with `apt-get install postgresql` (Debian/Ubuntu), set VOICECARE_PG_BIN \
         to the directory holding them, or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound { searched: String },
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "running as root, but there is no `postgres` system user to run the cluster as (PostgreSQL refuses to run as root); create one with `useradd --system postgres` or run voicecare as an ordinary user"
    )]
    NoPostgresUser,
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the embedded PostgreSQL did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Cluster files live in `<dir>/pgdata`, the socket in `<dir>/socket`.
    pub dir: PathBuf,
    /// Durable (fsync) for real data; off for throwaway test clusters.
    pub durable: bool,
    pub max_connections: u32,
}

impl EmbeddedOptions {
    pub fn durable(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durable: true,
            max_connections: 200,
        }
    }
    pub fn throwaway(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durable: false,
            max_connections: 300,
        }
    }
}

/// A running private cluster. Dropping it shuts the server down.
pub struct EmbeddedPostgres {
    dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    watchdog: Option<Child>,
}

const PORT: u16 = 5432;

impl EmbeddedPostgres {
    /// Initialise the cluster if needed, start it and wait until it answers.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin = find_binaries()?;
        let run_as_postgres = is_root();
        let data = opts.dir.join("pgdata");
        let socket_dir = opts.dir.join("socket");
        for d in [&opts.dir, &socket_dir] {
            std::fs::create_dir_all(d).map_err(|source| EmbeddedError::DataDir {
                path: d.clone(),
                source,
            })?;
        }
        if run_as_postgres {
            chown_to_postgres(&opts.dir)?;
            chown_to_postgres(&socket_dir)?;
        }
        set_mode(&socket_dir, 0o700)?;

        if !data.join("PG_VERSION").exists() {
            let mut initdb = pg_command(&bin, "initdb", run_as_postgres);
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]);
            if !opts.durable {
                initdb.arg("--no-sync");
            }
            run(initdb, "initdb").await?;
        }
        // A previous run killed hard may have left its postmaster.pid; the watchdog
        // normally prevents that, but a stale file must not stop us starting.
        stop_stale(&bin, &data, run_as_postgres).await;

        let mut settings = vec![
            format!("-k {}", shell_quote(&socket_dir.display().to_string())),
            "-c listen_addresses=''".to_string(),
            format!("-p {PORT}"),
            format!("-c max_connections={}", opts.max_connections),
            "-c shared_buffers=128MB".to_string(),
        ];
        if !opts.durable {
            settings.extend([
                "-c fsync=off".into(),
                "-c synchronous_commit=off".into(),
                "-c full_page_writes=off".into(),
            ]);
        }
        let log = opts.dir.join("postgres.log");
        let postgres = bin.join("postgres");
        // The watchdog: start the server, then block reading our pipe; EOF means
        // we are gone, so request a fast shutdown (SIGINT) and wait for it. The
        // whole script runs as the cluster's owner so the signal reaches
        // PostgreSQL itself, not a wrapper that might not forward it.
        let script = format!(
            "{postgres} -D {data} {settings} >>{log} 2>&1 </dev/null & pid=$!; \
             trap 'kill -INT $pid' TERM; \
             while read -r _; do :; done; kill -INT $pid 2>/dev/null; wait $pid",
            postgres = shell_quote(&postgres.display().to_string()),
            data = shell_quote(&data.display().to_string()),
            settings = settings.join(" "),
            log = shell_quote(&log.display().to_string()),
        );
        let mut watchdog = if run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let watchdog = watchdog
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| EmbeddedError::Spawn {
                command: "sh (postgres watchdog)".into(),
                source,
            })?;
        let pg = Self {
            dir: opts.dir.clone(),
            socket_dir,
            port: PORT,
            watchdog: Some(watchdog),
        };
        pg.wait_ready(Duration::from_secs(60), &log).await?;
        Ok(pg)
    }

    async fn wait_ready(&self, limit: Duration, log: &Path) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let opts = self.connect_options("postgres");
        loop {
            if opts.connect().await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(EmbeddedError::NotReady(limit, log.to_path_buf()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Connection options for a database in this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.port)
            .username("postgres")
            .database(database)
    }

    /// A libpq-style URL for a database in this cluster (for `psql` and child processes).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{}?host={}",
            self.port,
            database,
            self.socket_dir.display()
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shut the server down and wait for it (a fast shutdown: sessions are
    /// disconnected, committed data is on disk).
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        if let Some(mut child) = self.watchdog.take() {
            drop(child.stdin.take());
            let _ = child.wait().await;
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Closing the pipe is enough: the watchdog shuts the server down.
        if let Some(child) = self.watchdog.as_mut() {
            drop(child.stdin.take());
        }
    }
}

fn find_binaries() -> Result<PathBuf, EmbeddedError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("VOICECARE_PG_BIN") {
        candidates.push(dir.into());
    }
    // Debian/Ubuntu keep server binaries out of PATH, one directory per major version.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    for dir in &candidates {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir.clone());
        }
    }
    Err(EmbeddedError::BinariesNotFound {
        searched: "VOICECARE_PG_BIN, /usr/lib/postgresql/*/bin and PATH".into(),
    })
}

fn pg_command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

async fn run(mut cmd: Command, name: &str) -> Result<(), EmbeddedError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| EmbeddedError::Spawn {
            command: name.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(EmbeddedError::Command {
            command: name.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

async fn stop_stale(bin: &Path, data: &Path, as_postgres: bool) {
    if !data.join("postmaster.pid").exists() {
        return;
    }
    let mut stop = pg_command(bin, "pg_ctl", as_postgres);
    stop.arg("-D").arg(data).args(["stop", "-m", "fast", "-w"]);
    // Fails harmlessly when the pid file is stale (no server running).
    let _ = run(stop, "pg_ctl stop").await;
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

fn chown_to_postgres(path: &Path) -> Result<(), EmbeddedError> {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .map_err(|source| EmbeddedError::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
    if !status.success() {
        // chown fails when the user does not exist.
        return Err(EmbeddedError::NoPostgresUser);
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        EmbeddedError::DataDir {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
