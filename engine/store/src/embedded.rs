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
//! and the next start finds a cleanly shut-down cluster. A run killed along
//! with its watchdog leaves a `postmaster.pid` naming a process that is gone:
//! the next start says so and removes it. A `postmaster.pid` naming a live
//! postgres means another voicecare command (say, `serve`) runs the cluster:
//! we connect to it and never stop it.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the
//! `postgres` user; when that user cannot reach the data directory (a private
//! home directory), the cluster is kept in its own home instead, and
//! `<dir>/cluster-location` records where.

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
    #[error("the data directory {0} is a file, not a directory; give --data-dir a directory")]
    NotADirectory(PathBuf),
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
    #[error(
        "the embedded PostgreSQL exited while starting ({status}); its log {log} ends with:\n{tail}"
    )]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the embedded PostgreSQL did not accept connections within {limit:?}; its log {log} ends with:\n{tail}"
    )]
    NotReady {
        limit: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "a PostgreSQL server (pid {pid}) is running on {data} but does not answer on {socket}; stop it or use another --data-dir"
    )]
    LiveButSilent {
        pid: u32,
        data: PathBuf,
        socket: PathBuf,
    },
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Cluster files live in `<dir>/pgdata`, the socket in `<dir>/socket`
    /// (or, when run as root and `<dir>` is out of the `postgres` user's
    /// reach, in a directory of that user's recorded in `<dir>/cluster-location`).
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

/// A running private cluster. Dropping it shuts the server down, unless it
/// was already running when we came (another voicecare process owns it).
pub struct EmbeddedPostgres {
    dir: PathBuf,
    paths: ClusterPaths,
    port: u16,
    watchdog: Option<Child>,
    /// Our end of the watchdog's pipe: closing it shuts the server down.
    /// Kept apart from the child, whose `wait` would close it.
    pipe: Option<tokio::process::ChildStdin>,
    /// How it was started, to start it again if it dies.
    launch: Option<Launch>,
}

#[derive(Clone)]
struct Launch {
    bin: PathBuf,
    opts: EmbeddedOptions,
    as_postgres: bool,
}

const PORT: u16 = 5432;
/// Names the cluster's home when it is not `<dir>` itself.
const LOCATION_FILE: &str = "cluster-location";
/// Unix socket paths are limited to 107 bytes; leave room for the file name.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Where one cluster's files are.
#[derive(Debug, Clone)]
struct ClusterPaths {
    home: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
}

impl ClusterPaths {
    fn at(home: PathBuf) -> Self {
        let mut socket_dir = home.join("socket");
        if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN {
            // A deep data directory would make postgres refuse the socket path;
            // a short private directory named after the cluster serves instead.
            use sha2::Digest;
            let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
            socket_dir =
                std::env::temp_dir().join(format!("voicecare-pg-{}", &hex::encode(digest)[..16]));
        }
        Self {
            data: home.join("pgdata"),
            log: home.join("postgres.log"),
            socket_dir,
            home,
        }
    }
}

impl EmbeddedPostgres {
    /// Initialise the cluster if needed, start it and wait until it answers.
    /// When the cluster is already running (another voicecare command on the
    /// same data directory), connect to it and leave it running.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin = find_binaries()?;
        let run_as_postgres = is_root();
        let dir = prepare_dir(&opts.dir)?;
        let paths = locate(&dir, run_as_postgres).await?;
        for d in [&paths.home, &paths.socket_dir] {
            create_dir(d)?;
            if run_as_postgres {
                chown_to_postgres(d)?;
            }
        }
        set_mode(&paths.socket_dir, 0o700)?;

        match postmaster(&paths.data) {
            Postmaster::Live(pid) => return Self::attach(dir, paths, pid).await,
            Postmaster::Stale(pid) => recover_stale(&paths, pid),
            Postmaster::None => {}
        }

        if !paths.data.join("PG_VERSION").exists() {
            let mut initdb = pg_command(&bin, "initdb", run_as_postgres);
            initdb.arg("-D").arg(&paths.data).args([
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

        let mut watchdog = spawn_watchdog(&bin, &paths, &opts, run_as_postgres)?;
        let mut pg = Self {
            dir,
            paths,
            port: PORT,
            pipe: watchdog.stdin.take(),
            watchdog: Some(watchdog),
            launch: Some(Launch {
                bin,
                opts,
                as_postgres: run_as_postgres,
            }),
        };
        pg.wait_ready(Duration::from_secs(60)).await?;
        Ok(pg)
    }

    /// Use a cluster that another process started and keeps running.
    async fn attach(dir: PathBuf, paths: ClusterPaths, pid: u32) -> Result<Self, EmbeddedError> {
        tracing::info!(
            pid,
            data = %paths.data.display(),
            "the embedded PostgreSQL is already running (started by another voicecare process); using it"
        );
        let mut pg = Self {
            dir,
            paths,
            port: PORT,
            watchdog: None,
            pipe: None,
            launch: None,
        };
        if pg.wait_ready(Duration::from_secs(10)).await.is_err() {
            return Err(EmbeddedError::LiveButSilent {
                pid,
                data: pg.paths.data.clone(),
                socket: pg.paths.socket_dir.clone(),
            });
        }
        Ok(pg)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let opts = self.connect_options("postgres");
        loop {
            if opts.connect().await.is_ok() {
                return Ok(());
            }
            // A postgres that gave up (bad setting, unusable directory) is
            // reported at once with what it said, not after the time limit.
            if let Some(w) = self.watchdog.as_mut()
                && let Ok(Some(status)) = w.try_wait()
            {
                self.watchdog = None;
                return Err(EmbeddedError::Exited {
                    status: status.to_string(),
                    log: self.paths.log.clone(),
                    tail: log_tail(&self.paths.log),
                });
            }
            if started.elapsed() > limit {
                return Err(EmbeddedError::NotReady {
                    limit,
                    log: self.paths.log.clone(),
                    tail: log_tail(&self.paths.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Connection options for a database in this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.paths.socket_dir)
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
            self.paths.socket_dir.display()
        )
    }

    /// The directory this cluster was asked for (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the cluster's files are: `dir()` itself, or the place recorded
    /// in `dir()/cluster-location`.
    pub fn home(&self) -> &Path {
        &self.paths.home
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.paths.log
    }

    /// Whether this process started the server (and so stops it).
    pub fn owns_server(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Resolves when a server this process started has stopped by itself
    /// (crashed, killed); never for one another process runs.
    pub async fn exited(&mut self) -> String {
        match self.watchdog.as_mut() {
            Some(w) => match w.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            },
            None => std::future::pending().await,
        }
    }

    /// Start the server again after it died, on the same files and socket
    /// (a `postmaster.pid` it left is recovered from).
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        let Some(l) = self.launch.clone() else {
            return Ok(());
        };
        if let Postmaster::Stale(pid) = postmaster(&self.paths.data) {
            recover_stale(&self.paths, pid);
        }
        let mut watchdog = spawn_watchdog(&l.bin, &self.paths, &l.opts, l.as_postgres)?;
        self.pipe = watchdog.stdin.take();
        self.watchdog = Some(watchdog);
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Shut the server down and wait for it (a fast shutdown: sessions are
    /// disconnected, committed data is on disk). A server another process
    /// started is left running.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        drop(self.pipe.take());
        if let Some(mut child) = self.watchdog.take() {
            let _ = child.wait().await;
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Closing the pipe is enough: the watchdog shuts the server down.
        drop(self.pipe.take());
    }
}

/// Delete a cluster made under `dir`, including one kept elsewhere and
/// recorded in `dir/cluster-location`. The server must not be running.
pub fn remove_cluster(dir: &Path) -> std::io::Result<()> {
    if let Ok(home) = std::fs::read_to_string(dir.join(LOCATION_FILE)) {
        let home = PathBuf::from(home.trim());
        if home.is_absolute() && home.exists() {
            std::fs::remove_dir_all(&home)?;
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Absolute, symlinks resolved, created if missing, and a directory.
fn prepare_dir(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let err = |source| EmbeddedError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    let abs = std::path::absolute(dir).map_err(err)?;
    // Name the first part of the path that is a file, not just "File exists".
    for ancestor in abs.ancestors() {
        if ancestor.exists() {
            if !ancestor.is_dir() {
                return Err(EmbeddedError::NotADirectory(ancestor.to_path_buf()));
            }
            break;
        }
    }
    create_dir(&abs)?;
    abs.canonicalize().map_err(err)
}

fn create_dir(d: &Path) -> Result<(), EmbeddedError> {
    std::fs::create_dir_all(d).map_err(|source| EmbeddedError::DataDir {
        path: d.to_path_buf(),
        source,
    })
}

/// Where the cluster lives. As root the server runs as `postgres`, which must
/// be able to enter every directory above it; a data directory in a private
/// home (mode 0700) is out of its reach, so the cluster is kept in the
/// `postgres` user's own directory instead and the place recorded in `dir`.
/// Nothing of the user's directories is opened up.
async fn locate(dir: &Path, as_postgres: bool) -> Result<ClusterPaths, EmbeddedError> {
    if !as_postgres {
        return Ok(ClusterPaths::at(dir.to_path_buf()));
    }
    let pointer = dir.join(LOCATION_FILE);
    if let Ok(recorded) = std::fs::read_to_string(&pointer) {
        let home = PathBuf::from(recorded.trim());
        if home.is_absolute() {
            return Ok(ClusterPaths::at(home));
        }
    }
    chown_to_postgres(dir)?;
    if postgres_can_use(dir).await {
        return Ok(ClusterPaths::at(dir.to_path_buf()));
    }
    let base = postgres_home().join("voicecare-clusters");
    create_dir(&base)?;
    chown_to_postgres(&base)?;
    set_mode(&base, 0o700)?;
    let name: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    let tail = &name[name.len().saturating_sub(40)..];
    let home = base.join(format!("{tail}-{:08x}", rand::random::<u32>()));
    std::fs::write(&pointer, format!("{}\n", home.display())).map_err(|source| {
        EmbeddedError::DataDir {
            path: pointer.clone(),
            source,
        }
    })?;
    tracing::info!(
        dir = %dir.display(),
        cluster = %home.display(),
        "the `postgres` user cannot reach the data directory (a private home?); the cluster is kept in its own directory, recorded in {}",
        pointer.display()
    );
    Ok(ClusterPaths::at(home))
}

async fn postgres_can_use(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .args(["-a", "-x"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

fn postgres_home() -> PathBuf {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[0] == "postgres").then(|| PathBuf::from(f[5]))
        })
        .filter(|h| h.is_absolute() && h.is_dir() && h != Path::new("/"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/voicecare-postgres"))
}

enum Postmaster {
    None,
    Live(u32),
    Stale(Option<u32>),
}

/// What `postmaster.pid` says: no server, a live one, or one that is gone.
fn postmaster(data: &Path) -> Postmaster {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return Postmaster::None;
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if process_is_postgres(pid) => Postmaster::Live(pid),
        other => Postmaster::Stale(other),
    }
}

/// A pid names our server only while a process called postgres has it (a
/// pid left behind by a killed run may since belong to something else).
fn process_is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "postgres")
}

/// A killed run left its pid file and socket lock: remove them, and say so.
fn recover_stale(paths: &ClusterPaths, pid: Option<u32>) {
    tracing::warn!(
        pid,
        data = %paths.data.display(),
        "the embedded PostgreSQL was not shut down cleanly last time (its process is gone); removing the stale postmaster.pid and socket lock"
    );
    for f in [
        paths.data.join("postmaster.pid"),
        paths.socket_dir.join(format!(".s.PGSQL.{PORT}.lock")),
        paths.socket_dir.join(format!(".s.PGSQL.{PORT}")),
    ] {
        let _ = std::fs::remove_file(f);
    }
}

/// The watchdog: start the server, and shut it down when our pipe closes
/// (we exited, however we exited). The shell exits when postgres does, so a
/// server that fails to start is noticed at once. The whole script runs as
/// the cluster's owner so the signal reaches PostgreSQL itself.
fn spawn_watchdog(
    bin: &Path,
    paths: &ClusterPaths,
    opts: &EmbeddedOptions,
    as_postgres: bool,
) -> Result<Child, EmbeddedError> {
    let mut settings = vec![
        format!(
            "-k {}",
            shell_quote(&paths.socket_dir.display().to_string())
        ),
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
    // Background jobs of a non-interactive shell read /dev/null unless told
    // otherwise, so the guard reads our pipe through a duplicate (fd 3).
    let script = format!(
        "exec 3<&0; \
         {postgres} -D {data} {settings} >>{log} 2>&1 </dev/null & pid=$!; \
         (while read -r _ <&3; do :; done; kill -INT $pid 2>/dev/null) </dev/null & guard=$!; \
         exec 3<&-; \
         trap 'kill -INT $pid' TERM; \
         wait $pid; st=$?; \
         while kill -0 $pid 2>/dev/null; do wait $pid; st=$?; done; \
         kill $guard 2>/dev/null; exit $st",
        postgres = shell_quote(&bin.join("postgres").display().to_string()),
        data = shell_quote(&paths.data.display().to_string()),
        settings = settings.join(" "),
        log = shell_quote(&paths.log.display().to_string()),
    );
    let mut watchdog = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    watchdog
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| EmbeddedError::Spawn {
            command: "sh (postgres watchdog)".into(),
            source,
        })
}

/// The last lines of a log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.trim().is_empty() {
        "(the log is empty)".into()
    } else {
        tail
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

fn chown_to_postgres(path: &Path) -> Result<(), EmbeddedError> {
    // Not recursive: what initdb and postgres create is theirs already.
    let status = std::process::Command::new("chown")
        .arg("postgres:postgres")
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
