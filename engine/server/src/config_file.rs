//! `--config FILE`: a TOML file giving values to the global flags and to
//! those of `voicecare serve`.
//!
//! Each key is a flag's long name with `_` (or `-`) between words; `NAME_file
//! = "/path"` reads NAME's value from that file, trimmed, for secrets such as
//! `database_url_file`. The file's values become the flags' *default values*
//! in clap, so clap's own order gives the precedence: command line, then
//! environment variable, then this file, then the built-in default. Nothing
//! rewrites the arguments, and `--help` shows the values in force (secret ones
//! hidden).
//!
//! Errors name the file, the line and the key but never the value: a database
//! URL may carry a password.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, Parser};
use toml::{Spanned, Value};

/// Environment variable naming the configuration file.
pub const ENV: &str = "VOICECARE_CONFIG";
/// The subcommand the file configures besides the global flags.
const SUBCOMMAND: &str = "serve";
/// Flags that are not settings.
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{}: cannot read the configuration file: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: not valid TOML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{}:{line}: unknown key `{key}` (keys are the long flags of `voicecare serve --help`, with `_` for `-`)",
        file.display()
    )]
    UnknownKey {
        file: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{}:{line}: key `{key}` sets the same flag as `{other}` above", file.display())]
    Repeated {
        file: PathBuf,
        line: usize,
        key: String,
        other: String,
    },
    #[error("{}:{line}: key `{key}`: expected {expected}, found {found}", file.display())]
    WrongType {
        file: PathBuf,
        line: usize,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{}:{line}: key `{key}`: not a valid value for --{flag}{reason}", file.display())]
    InvalidValue {
        file: PathBuf,
        line: usize,
        key: String,
        flag: String,
        /// Why, without the value; empty when the reason would show it.
        reason: String,
    },
    #[error("{}:{line}: key `{key}`: cannot read {}: {error}", file.display(), path.display())]
    SecretFile {
        file: PathBuf,
        line: usize,
        key: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Parses the command line like `C::parse()`, with the configuration file
/// named by `--config` or `VOICECARE_CONFIG` filling in flags left unset.
pub fn parse<C: Parser>() -> Result<C, ConfigFileError> {
    parse_from(std::env::args_os())
}

/// [`parse`] for given arguments (the first is the program name).
pub fn parse_from<C, I, T>(args: I) -> Result<C, ConfigFileError>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command(C::command(), &args)?;
    let matches = cmd.clone().get_matches_from(args);
    Ok(C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit()))
}

/// `cmd` with the `--config` flag, and the defaults from the file it names.
pub fn command(cmd: Command, args: &[OsString]) -> Result<Command, ConfigFileError> {
    let cmd = cmd.arg(
        Arg::new("config")
            .long("config")
            .env(ENV)
            .global(true)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML file of settings: a key per flag; the command line and environment win over it"),
    );
    match config_path(args) {
        Some(file) => apply(cmd, &file),
        None => Ok(cmd),
    }
}

/// The file named by `--config FILE` / `--config=FILE`, else by the
/// environment. Read ahead of clap because the flags' defaults depend on it.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return rest.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Sets the defaults of `cmd`'s flags from the configuration file `file`.
pub fn apply(cmd: Command, file: &Path) -> Result<Command, ConfigFileError> {
    let text = std::fs::read_to_string(file).map_err(|error| ConfigFileError::Read {
        file: file.to_path_buf(),
        error,
    })?;
    apply_str(cmd, file, &text)
}

/// What a TOML value must be to set a flag.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Integer,
    /// A number with a fraction (an integer will do).
    Number,
    Text,
    /// A flag taking several values: an array of strings, or one string
    /// with the flag's delimiter.
    List(Option<char>),
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Kind::Bool;
        }
        if arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append) {
            return Kind::List(arg.get_value_delimiter());
        }
        let ty = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<i64>(),
            TypeId::of::<u64>(),
            TypeId::of::<i32>(),
            TypeId::of::<u32>(),
            TypeId::of::<u16>(),
            TypeId::of::<u8>(),
            TypeId::of::<usize>(),
        ];
        if integers.iter().any(|t| ty == *t) {
            Kind::Integer
        } else if ty == TypeId::of::<f64>() {
            Kind::Number
        } else {
            Kind::Text
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Text => "a string",
            Kind::List(_) => "an array of strings or a string",
        }
    }
}

/// A flag the file may set.
struct Setting {
    arg: Arg,
    in_subcommand: bool,
}

/// The settable flags by key: the root command's (the global flags) and the
/// subcommand's, with their long names spelt with `_`.
fn settings(cmd: &Command) -> BTreeMap<String, Setting> {
    let root = cmd.get_arguments().map(|a| (a, false));
    let sub = cmd
        .find_subcommand(SUBCOMMAND)
        .into_iter()
        .flat_map(|s| s.get_arguments().map(|a| (a, true)));
    root.chain(sub)
        .filter(|(a, _)| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .filter_map(|(a, in_subcommand)| {
            let key = a.get_long()?.replace('-', "_");
            Some((
                key,
                Setting {
                    arg: a.clone(),
                    in_subcommand,
                },
            ))
        })
        .collect()
}

fn apply_str(mut cmd: Command, file: &Path, text: &str) -> Result<Command, ConfigFileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(text).map_err(|e| ConfigFileError::Syntax {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(s.start)).unwrap_or(1),
            // The message alone: the error's Display quotes the line, which may hold a secret.
            message: e.message().trim().to_string(),
        })?;
    let settings = settings(&cmd);
    // Which key set each flag, to refuse a second one.
    let mut set_by: BTreeMap<String, String> = BTreeMap::new();
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let line = line_of(key.span().start);
        let key = key.into_inner();
        let normal = key.replace('-', "_");
        let (name, secret) = match normal.strip_suffix("_file") {
            Some(base) if !settings.contains_key(&normal) => (base.to_string(), true),
            _ => (normal, false),
        };
        let Some(setting) = settings.get(&name) else {
            return Err(ConfigFileError::UnknownKey {
                file: file.to_path_buf(),
                line,
                key,
            });
        };
        if let Some(other) = set_by.insert(name.clone(), key.clone()) {
            return Err(ConfigFileError::Repeated {
                file: file.to_path_buf(),
                line,
                key,
                other,
            });
        }
        let kind = Kind::of(&setting.arg);
        let wrong_type = |expected: &'static str, found: &Value| ConfigFileError::WrongType {
            file: file.to_path_buf(),
            line,
            key: key.clone(),
            expected,
            found: found.type_str(),
        };
        let value = value.into_inner();
        let raw: Vec<String> = if secret {
            let Value::String(path) = &value else {
                return Err(wrong_type("the path of a file", &value));
            };
            let path = PathBuf::from(path);
            let text =
                std::fs::read_to_string(&path).map_err(|error| ConfigFileError::SecretFile {
                    file: file.to_path_buf(),
                    line,
                    key: key.clone(),
                    path: path.clone(),
                    error,
                })?;
            split(kind, text.trim())
        } else {
            match (kind, &value) {
                (Kind::Bool, Value::Boolean(b)) => vec![b.to_string()],
                (Kind::Integer | Kind::Number, Value::Integer(i)) => vec![i.to_string()],
                (Kind::Number, Value::Float(f)) => vec![f.to_string()],
                (Kind::Text, Value::String(s)) => vec![s.clone()],
                (Kind::List(_), Value::String(s)) => split(kind, s),
                (Kind::List(_), Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(wrong_type("an array of strings", other)),
                    })
                    .collect::<Result<_, _>>()?,
                (_, other) => return Err(wrong_type(kind.expected(), other)),
            }
        };
        for one in &raw {
            check(&setting.arg, one).map_err(|reason| ConfigFileError::InvalidValue {
                file: file.to_path_buf(),
                line,
                key: key.clone(),
                flag: setting.arg.get_long().unwrap_or_default().to_string(),
                reason,
            })?;
        }
        // Never shown in `--help` when it came from a secret file or the flag
        // hides its environment value.
        let hide = secret || setting.arg.is_hide_env_values_set();
        // clap wants 'static defaults (without its `string` feature); this
        // runs once per process.
        let defaults: Vec<&'static str> = raw
            .into_iter()
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect();
        let set = move |a: Arg| a.default_values(defaults).hide_default_value(hide);
        let id = setting.arg.get_id().clone();
        cmd = if setting.in_subcommand {
            cmd.mut_subcommand(SUBCOMMAND, |s| s.mut_arg(id, set))
        } else {
            cmd.mut_arg(id, set)
        };
    }
    Ok(cmd)
}

fn split(kind: Kind, s: &str) -> Vec<String> {
    match kind {
        Kind::List(Some(delimiter)) => s.split(delimiter).map(|p| p.trim().to_string()).collect(),
        _ => vec![s.to_string()],
    }
}

/// Runs the flag's own value parser on `raw`. On failure, the reason with
/// the value left out.
fn check(arg: &Arg, raw: &str) -> Result<(), String> {
    let probe = Command::new("probe").no_binary_name(true).arg(
        Arg::new("value")
            .value_parser(arg.get_value_parser().clone())
            .action(ArgAction::Set)
            .allow_hyphen_values(true)
            .required(true),
    );
    let Err(e) = probe.try_get_matches_from([raw]) else {
        return Ok(());
    };
    let reason = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    Err(match reason.strip_prefix(raw) {
        // "5 is not in 10..=3600" becomes "the value is not in 10..=3600".
        Some(rest) if !raw.is_empty() => format!(": the value{rest}"),
        _ if reason.is_empty() || (!raw.is_empty() && reason.contains(raw)) => String::new(),
        _ => format!(": {reason}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DbArgs, ServeArgs};
    use clap::{CommandFactory, FromArgMatches, Subcommand};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        Serve(Box<ServeArgs>),
        Migrate,
    }

    fn with_file(text: &str, args: &[&str]) -> Result<Cli, String> {
        let file = Path::new("/etc/voicecare/voicecare.toml");
        let cmd = apply_str(
            Cli::command().arg(Arg::new("config").long("config")),
            file,
            text,
        )
        .map_err(|e| e.to_string())?;
        let argv = std::iter::once("voicecare").chain(args.iter().copied());
        let m = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    fn serve(cli: Cli) -> ServeArgs {
        match cli.command {
            Cmd::Serve(a) => *a,
            Cmd::Migrate => panic!("not serve"),
        }
    }

    #[test]
    fn file_values_fill_in_flags_the_command_line_leaves_unset() {
        let text = r#"
            data_dir = "/var/lib/voicecare"
            listen = "127.0.0.1:9000"
            lease-secs = 300
            no_calls = true
            media_bind = ["127.0.0.1:0", "10.0.0.1:0"]
        "#;
        let cli = with_file(text, &["serve", "--listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(cli.db.data_dir, Path::new("/var/lib/voicecare"));
        let s = serve(cli);
        assert_eq!(s.listen.port(), 9001, "the command line wins");
        assert_eq!(s.lease_secs, 300);
        assert!(s.no_calls);
        assert_eq!(s.media_bind.len(), 2);
        assert_eq!(
            s.session_hours, 12,
            "a key not in the file keeps its default"
        );
        // A global flag after the subcommand wins too.
        let cli = with_file(text, &["serve", "--data-dir", "/srv/vc"]).unwrap();
        assert_eq!(cli.db.data_dir, Path::new("/srv/vc"));
        // Other subcommands get the global settings.
        let cli = with_file(text, &["migrate"]).unwrap();
        assert_eq!(cli.db.data_dir, Path::new("/var/lib/voicecare"));
    }

    #[test]
    fn sip_trunks_come_as_one_a_comma_separated_list_or_an_array() {
        let trunks = |cli: Cli| {
            serve(cli)
                .sip
                .sip_trunk
                .iter()
                .map(|t| format!("{}:{}", t.host, t.port))
                .collect::<Vec<_>>()
        };
        let one = with_file(r#"sip_trunk = "a.example:5060""#, &["serve"]).unwrap();
        assert_eq!(trunks(one), ["a.example:5060"]);
        let array = r#"sip_trunk = ["a.example:5060", "b.example:5080"]"#;
        let two = with_file(array, &["serve"]).unwrap();
        assert_eq!(trunks(two), ["a.example:5060", "b.example:5080"]);
        let flag = ["serve", "--sip-trunk", "a.example:5060,[2001:db8::1]:5060"];
        let cli = with_file("", &flag).unwrap();
        let s = serve(cli);
        assert_eq!(s.sip.sip_trunk[1].host, "2001:db8::1");
        assert_eq!(
            s.sip.sip_options_interval, 30,
            "pings every 30 s by default"
        );
        let none = with_file("", &["serve"]).unwrap();
        assert!(trunks(none).is_empty(), "no trunk: no SIP");
        let off = with_file("sip_options_interval = 0", &["serve"]).unwrap();
        assert_eq!(serve(off).sip.sip_options_interval, 0);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        // PATH is set in any test process; a flag reading it stands for any
        // flag with an environment variable.
        let path = std::env::var("PATH").expect("PATH is set");
        let cmd = Command::new("t")
            .arg(Arg::new("search").long("search").env("PATH"))
            .subcommand(Command::new(SUBCOMMAND));
        let cmd = apply_str(cmd, Path::new("f.toml"), "search = \"from-file\"").unwrap();
        let m = cmd.try_get_matches_from(["t"]).unwrap();
        assert_eq!(m.get_one::<String>("search"), Some(&path));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key_never_the_value() {
        let err = |text: &str| with_file(text, &["serve"]).unwrap_err();
        let e = err("listen = \"127.0.0.1:1\"\n\nlissten = \"x\"\n");
        assert!(
            e.starts_with("/etc/voicecare/voicecare.toml:3: unknown key `lissten`"),
            "{e}"
        );
        let e = err("\nlease_secs = \"soon\"\n");
        assert!(
            e.contains("voicecare.toml:2: key `lease_secs`: expected an integer, found string"),
            "{e}"
        );
        let e = err("lease_secs = 5\n");
        assert!(e.contains(":1: key `lease_secs`: not a valid value for --lease-secs: the value is not in 10..=3600"), "{e}");
        let e = err("listen = \"s3cret-host\"\n");
        assert!(
            e.contains(":1: key `listen`: not a valid value for --listen"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = err("no_calls = \"yes\"\n");
        assert!(e.contains("expected true or false, found string"), "{e}");
        let e = err("database_url = \"postgres://u:s3cret@h/db\"\ndatabase_url_file = \"/x\"\n");
        assert!(
            e.contains(":2: key `database_url_file` sets the same flag as `database_url`"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = err("listen = \"127.0.0.1:1\"\n[serve]\nlisten = \"127.0.0.1:2\"\n");
        assert!(e.contains(":2: unknown key `serve`"), "{e}");
        let e = err("data_dir = \"/x\"\ndatabase_url = \"postgres://u:s3cret@h/db\n");
        assert!(e.contains("voicecare.toml:2: not valid TOML"), "{e}");
        assert!(!e.contains("s3cret"), "the line is not quoted: {e}");
    }

    #[test]
    fn secrets_come_from_files_and_stay_out_of_help() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("database_url");
        std::fs::write(&secret, "postgres://vc:s3cret@db/voicecare\n").unwrap();
        let text = format!("database_url_file = {:?}\n", secret.display().to_string());
        let cli = with_file(&text, &["serve"]).unwrap();
        assert_eq!(
            cli.db.database_url.as_deref(),
            Some("postgres://vc:s3cret@db/voicecare"),
            "read and trimmed"
        );
        let mut cmd = apply_str(Cli::command(), Path::new("f.toml"), &text).unwrap();
        let help = cmd.render_long_help().to_string();
        assert!(!help.contains("s3cret"), "{help}");
        // A database URL written in the file is hidden as well.
        let text = "database-url = \"postgres://vc:s3cret@db/voicecare\"\n";
        let mut cmd = apply_str(Cli::command(), Path::new("f.toml"), text).unwrap();
        assert!(!cmd.render_long_help().to_string().contains("s3cret"));

        let missing = dir.path().join("nope");
        let text = format!(
            "\ndatabase_url_file = {:?}\n",
            missing.display().to_string()
        );
        let e = with_file(&text, &["serve"]).unwrap_err();
        assert!(
            e.contains(&format!(
                "voicecare.toml:2: key `database_url_file`: cannot read {}",
                missing.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn config_path_comes_from_the_flag_before_the_environment() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["voicecare", "--config", "a.toml", "serve"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["voicecare", "serve", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(
            config_path(&args(&["voicecare", "flow", "check", "--", "--config"])),
            std::env::var_os(ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        );
    }

    /// Every `# key = value` line of the example, uncommented.
    fn example_keys(path: &str) -> (String, Vec<String>) {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path),
        )
        .unwrap();
        let mut keys = Vec::new();
        let mut uncommented = String::new();
        for line in text.lines() {
            let line = line.trim_start_matches("# ");
            if let Some((key, _)) = line.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                keys.push(key.to_string());
                uncommented.push_str(line);
                uncommented.push('\n');
            }
        }
        (uncommented, keys)
    }

    #[test]
    fn the_example_file_has_every_key_with_its_default() {
        let (text, mut keys) = example_keys("packaging/voicecare.toml");
        let settings = settings(&Cli::command());
        // Keys without a default (database_url, node_id) and the secret-file
        // alternatives show an example value instead.
        let has_default = |key: &str| {
            settings
                .get(key)
                .is_some_and(|s| !s.arg.get_default_values().is_empty())
        };
        let defaults_only: String = text
            .lines()
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| has_default(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        let with_example = with_file(&defaults_only, &["serve"]).unwrap();
        let defaults = with_file("", &["serve"]).unwrap();
        assert_eq!(with_example.db.data_dir, defaults.db.data_dir);
        assert_eq!(
            format!("{:?}", serve(with_example)),
            format!("{:?}", serve(defaults)),
            "the example shows the built-in defaults"
        );
        // `NAME_file` keys of the secret-file convention are not flags;
        // a flag whose own name ends in `_file` (`sip_password_file`) is.
        keys.retain(|k| !k.ends_with("_file") || settings.contains_key(k));
        let mut all: Vec<String> = settings.into_keys().collect();
        all.sort();
        keys.sort();
        assert_eq!(keys, all, "the example names every key once");
        // The installed file is valid too.
        let installed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/debian/voicecare.toml"),
        )
        .unwrap();
        let cli = with_file(&installed, &["serve"]).unwrap();
        assert_eq!(cli.db.data_dir, Path::new("/var/lib/voicecare"));
        assert_eq!(
            serve(cli).flows_dir,
            Path::new("/usr/share/voicecare/ivr-flows")
        );
    }
}
