//! `shmsync`: see, explain and clean up every shmsync object on the machine.
//!
//! ```text
//! shmsync ls [--all] [--json]          one line per object in /dev/shm
//! shmsync inspect [--json] NAME...     everything an object's segment says
//! shmsync rm NAME...                   unlink objects (only shmsync's)
//! shmsync gc [--dry-run] [--ephemeral-only] [--prefix P]... [--json]
//! ```
//!
//! Build with `cargo install shmsync --features cli`, or run in a checkout
//! with `cargo run --features cli -- ls`. Exit codes: 0; 1 when a name was
//! not found, is not a shmsync object, could not be read or removed; 2 for
//! a usage error. The JSON schema is documented in `shmsync::inspect`.
//!
//! Everything here is a front end to `shmsync::inspect`: reading takes no
//! lock and changes no byte.

// The text output lives beside this file (a module path, so that Cargo does
// not take it for a second binary).
#[path = "shmsync/render.rs"]
mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use shmsync::inspect::{self, Action, Decision, GcOptions, Info, Unreadable, SCHEMA};
use shmsync::Error;

/// The document `ls --json` and `inspect --json` print (schema in the
/// `shmsync::inspect` docs).
#[derive(Serialize)]
struct ListDocument<'a> {
    schema: u32,
    objects: Vec<&'a Info>,
    not_found: &'a [String],
    other_files: &'a [String],
    unreadable_processes: &'a [Unreadable],
}

/// The document `gc --json` prints.
#[derive(Serialize)]
struct GcDocument<'a> {
    schema: u32,
    dry_run: bool,
    decisions: &'a [Decision],
    unreadable_processes: &'a [Unreadable],
}

fn print_json(out: &mut impl Write, doc: &impl Serialize) -> Result<(), Box<dyn std::error::Error>> {
    writeln!(out, "{}", serde_json::to_string_pretty(doc)?)?;
    Ok(())
}

#[derive(Parser)]
#[command(name = "shmsync", version, about = "See, explain and clean up shmsync objects in /dev/shm")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One line per shmsync object: name, kind, size, mode, owner, creator,
    /// the pids that map it, its state.
    Ls {
        /// Also list the files in /dev/shm that are not shmsync objects.
        #[arg(long)]
        all: bool,
        /// Print one JSON document (schema in the shmsync::inspect docs).
        #[arg(long)]
        json: bool,
    },
    /// Everything an object's segment says, decoded per kind.
    Inspect {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
        /// Objects to inspect (names in /dev/shm).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove objects; refuses files that are not shmsync objects.
    Rm {
        /// Objects to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the objects whose creator is dead and that no live process
    /// maps; print what was removed and why.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only objects made by K::new() (and unfinished creates).
        #[arg(long)]
        ephemeral_only: bool,
        /// Only names starting with this (repeatable).
        #[arg(long = "prefix", value_name = "PREFIX")]
        prefixes: Vec<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Ls { all, json } => ls(&mut out, all, json),
        Command::Inspect { json, names } => inspect_names(&mut out, &names, json),
        Command::Rm { names } => rm(&mut out, &names),
        Command::Gc { dry_run, ephemeral_only, prefixes, json } => {
            let mut opts = GcOptions::new().dry_run(dry_run).ephemeral_only(ephemeral_only);
            for p in &prefixes {
                opts = opts.prefix(p);
            }
            gc(&mut out, &opts, json)
        }
    };
    let result = result.and_then(|ok| out.flush().map(|()| ok).map_err(Into::into));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // The reader went away (`shmsync ls | head`): not an error of ours.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmsync: {e}");
            ExitCode::from(1)
        }
    }
}

/// What a command returns: `Ok(true)` all went well, `Ok(false)` something
/// was not found or not ours (exit 1).
type Outcome = Result<bool, Box<dyn std::error::Error>>;

fn ls(out: &mut impl Write, all: bool, json: bool) -> Outcome {
    let listing = inspect::list()?;
    // With --all, the other files too: described where they can be read as
    // files at all, else by name only.
    let (mut described, mut bare) = (Vec::new(), Vec::new());
    if all {
        for name in &listing.other_files {
            match shmsync::inspect(name) {
                Ok(info) => described.push(info),
                Err(_) => bare.push(name.clone()),
            }
        }
    }
    if json {
        let doc = ListDocument {
            schema: SCHEMA,
            objects: listing.objects.iter().chain(&described).collect(),
            not_found: &[],
            other_files: &listing.other_files,
            unreadable_processes: &listing.unreadable_processes,
        };
        print_json(out, &doc)?;
        return Ok(true);
    }
    let mut rows: Vec<&Info> = listing.objects.iter().chain(&described).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    render::ls(out, &rows, &bare, std::io::stdout().is_terminal())?;
    if !all && !listing.other_files.is_empty() {
        eprintln!(
            "shmsync: {} other file(s) in /dev/shm are not shmsync objects (`shmsync ls --all` lists them)",
            listing.other_files.len()
        );
    }
    warn_unreadable(&listing.unreadable_processes);
    Ok(true)
}

fn inspect_names(out: &mut impl Write, names: &[String], json: bool) -> Outcome {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut all_ours = true;
    for name in names {
        match shmsync::inspect(name) {
            Ok(info) => {
                all_ours &= info.status.is_ours();
                found.push(info);
            }
            Err(e @ (Error::NotFound { .. } | Error::InvalidName { .. })) => {
                if !json {
                    eprintln!("shmsync: {name}: {}", not_found(&e));
                }
                missing.push(name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        let unreadable = inspect::unreadable_processes()?;
        let doc = ListDocument {
            schema: SCHEMA,
            objects: found.iter().collect(),
            not_found: &missing,
            other_files: &[],
            unreadable_processes: &unreadable,
        };
        print_json(out, &doc)?;
    } else {
        for (i, info) in found.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            render::inspect(out, info)?;
        }
    }
    Ok(all_ours && missing.is_empty())
}

fn not_found(e: &Error) -> String {
    match e {
        Error::NotFound { .. } => "no such object in /dev/shm".to_string(),
        e => e.to_string(),
    }
}

fn rm(out: &mut impl Write, names: &[String]) -> Outcome {
    let mut ok = true;
    for name in names {
        match inspect::remove(name) {
            Ok(info) => writeln!(out, "removed {} ({})", info.name, info.kind.unwrap_or(info.status.word()))?,
            Err(e) => {
                ok = false;
                eprintln!("shmsync: cannot remove '{name}': {}", rm_error(name, &e));
            }
        }
    }
    Ok(ok)
}

fn rm_error(name: &str, e: &Error) -> String {
    match e {
        Error::NotFound { .. } => "no such object in /dev/shm".to_string(),
        Error::Corrupt { detail, .. } => format!("{detail}; only shmsync objects are removed"),
        Error::PermissionDenied { .. } => match std::fs::metadata(format!("/dev/shm/{name}")) {
            Ok(meta) => format!(
                "permission denied: it belongs to uid {} (mode {:04o}); only its owner or root may remove it",
                std::os::unix::fs::MetadataExt::uid(&meta),
                std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777
            ),
            Err(_) => "permission denied".to_string(),
        },
        e => e.to_string(),
    }
}

fn gc(out: &mut impl Write, opts: &GcOptions, json: bool) -> Outcome {
    let report = shmsync::gc(opts)?;
    let failed = report.with(Action::Failed).count();
    if json {
        let doc = GcDocument {
            schema: SCHEMA,
            dry_run: report.dry_run,
            decisions: &report.decisions,
            unreadable_processes: &report.unreadable_processes,
        };
        print_json(out, &doc)?;
    } else {
        render::gc(out, &report)?;
        warn_unreadable(&report.unreadable_processes);
    }
    Ok(failed == 0)
}

fn warn_unreadable(unreadable: &[Unreadable]) {
    if unreadable.is_empty() {
        return;
    }
    let mut pids: Vec<String> = unreadable.iter().take(5).map(|p| p.pid.to_string()).collect();
    if unreadable.len() > 5 {
        pids.push(format!("and {} more", unreadable.len() - 5));
    }
    eprintln!(
        "shmsync: could not read the mappings of {} process(es) (pid {}): objects only they map show as \
         unmapped; gc asks the kernel before it removes anything",
        unreadable.len(),
        pids.join(", ")
    );
}
