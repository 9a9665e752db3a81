//! Administration: `voicecare migrate`, `operator add`, `units add`,
//! `elders import`, `elders numbers-to-fix`, `elders set-phone`, `queue list`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use voicecare_store::audit::Actor;
use voicecare_store::elders::{self as elders_store, Phone};
use voicecare_store::operators::{self, NewOperator, Password, Role, Scope};
use voicecare_store::queue::{self, ListFilter};
use voicecare_store::{import, org};

use crate::config::DbArgs;

pub async fn migrate(db_args: DbArgs) -> anyhow::Result<()> {
    // Opening the database applies pending migrations.
    let db = crate::db::open(&db_args, 2).await?;
    let applied = voicecare_store::db::migrations_applied(&db.pool).await?;
    println!("database is up to date ({applied} migrations applied)");
    db.close().await?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Add an operator. The password is read from VOICECARE_OPERATOR_PASSWORD or the first line of stdin.
    Add(OperatorAdd),
}

#[derive(Debug, Args)]
pub struct OperatorAdd {
    #[arg(long)]
    pub username: String,
    /// Name shown to colleagues; defaults to the username.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_parser = ["operator", "supervisor", "admin"], default_value = "operator")]
    pub role: String,
    /// The unit the operator works for, as a path: City[/County[/Street[/Community]]].
    #[arg(long)]
    pub unit: String,
}

pub async fn operator(db_args: DbArgs, cmd: OperatorCmd) -> anyhow::Result<()> {
    let OperatorCmd::Add(a) = cmd;
    let password = match std::env::var("VOICECARE_OPERATOR_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            if std::io::stdin().is_terminal() {
                eprint!("password for {}: ", a.username);
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let password = Password::new(password)?;
    let db = crate::db::open(&db_args, 2).await?;
    let unit = org::find_by_path(&db.pool, &a.unit)
        .await?
        .with_context(|| format!("no unit {:?}; create it with `voicecare units add`", a.unit))?;
    let op = operators::add(
        &db.pool,
        NewOperator {
            username: &a.username,
            display_name: a.name.as_deref().unwrap_or(&a.username),
            password: &password,
            role: Role::parse(&a.role).expect("clap restricts the values"),
            unit_id: unit.id,
        },
        Utc::now(),
    )
    .await?;
    println!(
        "operator {} (id {}) added to {} as {}",
        op.username, op.id, a.unit, a.role
    );
    db.close().await?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum UnitsCmd {
    /// Create every unit along a path, e.g. "Riverside/North/Elm Street/Elm Court".
    Add { path: String },
}

pub async fn units(db_args: DbArgs, cmd: UnitsCmd) -> anyhow::Result<()> {
    let UnitsCmd::Add { path } = cmd;
    let parts: Vec<&str> = path.split('/').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 4 {
        bail!(
            "unit path {path:?}: expected City[/County[/Street[/Community]]] with no empty parts"
        );
    }
    let db = crate::db::open(&db_args, 2).await?;
    let mut conn = db.pool.acquire().await?;
    let unit = org::ensure_path(&mut conn, &parts).await?;
    drop(conn);
    println!("{} {:?} (id {})", unit.level, path, unit.id);
    db.close().await?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum EldersCmd {
    /// Enrol elders from a CSV file (see docs/operations.md for the columns).
    Import(EldersImport),
    /// Elders whose telephone number the network says does not exist (all units).
    NumbersToFix {
        #[arg(long)]
        json: bool,
    },
    /// Correct an elder's telephone number (E.164); closes their open number-to-fix task.
    SetPhone {
        /// The elder's id.
        elder_id: i64,
        /// The new number, e.g. +8613912345678.
        phone: String,
    },
}

#[derive(Debug, Args)]
pub struct EldersImport {
    pub file: PathBuf,
    /// Import the valid rows and list the invalid ones (default: import nothing if any row is bad).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Create communities named in the file that do not exist yet.
    #[arg(long)]
    pub create_units: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn elders(db_args: DbArgs, cmd: EldersCmd) -> anyhow::Result<()> {
    let a = match cmd {
        EldersCmd::Import(a) => a,
        EldersCmd::NumbersToFix { json } => return numbers_to_fix(db_args, json).await,
        EldersCmd::SetPhone { elder_id, phone } => {
            let phone = Phone::parse(&phone).map_err(|e| anyhow::anyhow!("phone: {e}"))?;
            let db = crate::db::open(&db_args, 2).await?;
            elders_store::set_phone(&db.pool, Actor::System, elder_id, &phone, Utc::now()).await?;
            db.close().await?;
            println!("elder {elder_id}: telephone number changed");
            return Ok(());
        }
    };
    let file = std::fs::File::open(&a.file)
        .with_context(|| format!("cannot open {}", a.file.display()))?;
    let db = crate::db::open(&db_args, 4).await?;
    let report =
        import::import_csv(&db.pool, file, a.skip_invalid, a.create_units, Utc::now()).await?;
    db.close().await?;
    let name = a.file.display();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for e in &report.errors {
            eprintln!("{name}:{}: column {}: {}", e.line, e.column, e.message);
        }
        if report.rolled_back {
            eprintln!(
                "{name}: {} bad value(s) in {} row(s); nothing imported (use --skip-invalid to import the valid rows)",
                report.errors.len(),
                report.rows
            );
        } else {
            println!(
                "{name}: imported {} of {} rows",
                report.imported, report.rows
            );
        }
    }
    if !report.errors.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}

/// The administrator's list of numbers to fix, over every city.
async fn numbers_to_fix(db_args: DbArgs, json: bool) -> anyhow::Result<()> {
    let db = crate::db::open(&db_args, 2).await?;
    let mut rows = Vec::new();
    for city in org::roots(&db.pool).await? {
        rows.extend(
            elders_store::numbers_to_fix(&db.pool, Actor::System, city.id, Utc::now()).await?,
        );
    }
    db.close().await?;
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:>6}  {:<15}  {:>5}  {:<20}  elder",
        "elder", "outcome", "times", "last failed"
    );
    for r in &rows {
        println!(
            "{:>6}  {:<15}  {:>5}  {:<20}  {} ({})",
            r.elder_id,
            r.outcome,
            r.occurrences,
            r.last_seen_at.format("%Y-%m-%d %H:%M:%S"),
            r.full_name,
            r.community
        );
    }
    println!("{} number(s) to fix", rows.len());
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List escalations in queue order (all units).
    List {
        /// Only these levels (repeatable).
        #[arg(long)]
        level: Vec<String>,
        /// Only these statuses (repeatable; default open and claimed).
        #[arg(long)]
        status: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn queue(db_args: DbArgs, cmd: QueueCmd) -> anyhow::Result<()> {
    let QueueCmd::List {
        level,
        status,
        json,
    } = cmd;
    let db = crate::db::open(&db_args, 2).await?;
    let cities: Vec<i64> = voicecare_store::org::roots(&db.pool)
        .await?
        .into_iter()
        .map(|u| u.id)
        .collect();
    let filter = ListFilter {
        levels: level,
        statuses: status,
        limit: Some(1000),
    };
    let now = Utc::now();
    let mut items = Vec::new();
    for city in cities {
        // The administrator's view: a city-level scope for each city.
        let scope = Scope {
            operator_id: 0,
            unit_id: city,
            role: Role::Admin,
        };
        items.extend(queue::list(&db.pool, &scope, &filter, now).await?);
    }
    db.close().await?;
    if json {
        for i in &items {
            println!("{}", serde_json::to_string(i)?);
        }
    } else {
        println!(
            "{:>6}  {:<9}  {:<8}  {:<20}  {:<8}  elder",
            "id", "level", "status", "flagged", "sla"
        );
        for i in &items {
            let e = &i.escalation;
            println!(
                "{:>6}  {:<9}  {:<8}  {:<20}  {:<8}  {} ({})",
                e.id,
                e.level,
                e.status,
                e.created_at.format("%Y-%m-%d %H:%M:%S"),
                if i.breached { "BREACHED" } else { "ok" },
                i.elder_name,
                i.community
            );
        }
        println!("{} item(s)", items.len());
    }
    Ok(())
}
