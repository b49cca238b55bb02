//! The text the `shmsync` command prints: `ls` as an aligned table on a
//! terminal and as tab-separated rows (no header) when piped; `inspect` as
//! one block of `field  value` lines per object; `gc` as one line per
//! decision worth reading and a summary.

use std::io::{self, Write};

use shmsync::inspect::{Action, Detail, GcReport, Info, LockDetail};

const COLUMNS: [&str; 9] = ["NAME", "KIND", "SIZE", "MODE", "OWNER", "CREATOR", "MAPPED-BY", "STATE", "NOTE"];

/// `shmsync ls`: a row per object, then a row per bare name.
pub fn ls(out: &mut impl Write, objects: &[&Info], bare: &[String], table: bool) -> io::Result<()> {
    let mut rows: Vec<[String; 9]> = objects.iter().map(|info| row(info)).collect();
    rows.extend(bare.iter().map(|name| {
        let dash = || "-".to_string();
        // Such a name may hold any byte but '/' and NUL: escaped, so a tab
        // or newline in it cannot break the rows.
        let name = name.escape_debug().to_string();
        [name, dash(), dash(), dash(), dash(), dash(), dash(), "foreign".into(), "not a shmsync object".into()]
    }));
    if !table {
        for row in &rows {
            writeln!(out, "{}", row.join("\t"))?;
        }
        return Ok(());
    }
    let mut widths = COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let header = COLUMNS.map(str::to_string);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == COLUMNS.len() {
                // An empty note reads better as nothing on a terminal.
                line.push_str(if cell == "-" { "" } else { cell });
            } else if i == 2 {
                line.push_str(&format!("{cell:>w$}  "));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn row(info: &Info) -> [String; 9] {
    let note = match (&info.problem, info.orphan) {
        (Some(problem), _) => problem.clone(),
        (None, true) => "orphan: creator dead, nobody maps it; gc removes it".to_string(),
        (None, false) => "-".to_string(),
    };
    [
        info.name.clone(),
        info.kind.unwrap_or("-").to_string(),
        info.size.to_string(),
        format!("{:04o}", info.mode),
        owner(info),
        info.creator.map(|c| format!("{}/{}", c.pid, if c.alive { "alive" } else { "dead" })).unwrap_or("-".into()),
        pids(&info.mapped_by, ","),
        info.state.to_string(),
        note,
    ]
}

fn owner(info: &Info) -> String {
    info.user.clone().unwrap_or_else(|| info.uid.to_string())
}

fn pids(pids: &[u32], sep: &str) -> String {
    if pids.is_empty() {
        return "-".to_string();
    }
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(sep)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `shmsync inspect`: everything known about one object.
pub fn inspect(out: &mut impl Write, info: &Info) -> io::Result<()> {
    let mut lines: Vec<(&str, String)> = vec![("status", info.status.word().to_string())];
    if let Some(problem) = &info.problem {
        lines.push(("problem", problem.clone()));
    }
    lines.push(("kind", info.kind.unwrap_or("-").to_string()));
    lines.push(("state", info.state.to_string()));
    lines.push(("size", format!("{} bytes", info.size)));
    lines.push(("mode", format!("{:04o}, owner {} (uid {})", info.mode, owner(info), info.uid)));
    let made_by = if info.temporary {
        "an unfinished create (temporary file)"
    } else if info.ephemeral {
        "K::new() (removed by its creator)"
    } else {
        "a name (kept until unlinked)"
    };
    lines.push(("made by", made_by.to_string()));
    lines.push((
        "creator",
        match info.creator {
            Some(c) => {
                format!("pid {} (started at tick {}), {}", c.pid, c.start, if c.alive { "alive" } else { "dead" })
            }
            None => "not recorded".to_string(),
        },
    ));
    lines.push(("mapped by", pids(&info.mapped_by, ", ")));
    lines.push(("orphan", if info.orphan { "yes: gc removes it".to_string() } else { "no".to_string() }));
    if let Some(detail) = &info.detail {
        detail_lines(&mut lines, detail);
    }
    if let Some(h) = &info.header {
        lines.push((
            "header",
            format!(
                "layout {}, kind {}, total_size {}, ptr_width {}, mutex_size {}, object {} bytes aligned to {}, \
                 type_hash {}, state {}, creator {} at tick {}, libc {}, flags {:#x}",
                h.layout_version,
                h.kind,
                h.total_size,
                h.ptr_width,
                h.mutex_size,
                h.object_size,
                h.object_align,
                h.type_hash,
                h.state,
                h.creator_pid,
                h.creator_start,
                h.libc,
                h.flags
            ),
        ));
    }
    writeln!(out, "{}", info.name)?;
    for (field, value) in lines {
        writeln!(out, "  {field:<13}{value}")?;
    }
    Ok(())
}

fn detail_lines(lines: &mut Vec<(&'static str, String)>, detail: &Detail) {
    match detail {
        Detail::Lock(lock) => lock_lines(lines, lock),
        Detail::Mutex { lock, value_size, value_align } => {
            lines.push(("value", format!("{value_size} bytes, aligned to {value_align} (T rounded up to the cell)")));
            lock_lines(lines, lock);
        }
        Detail::RwLock {
            readers,
            holder_tid,
            holder_pid,
            holder_alive,
            writing,
            poisoned,
            value_size,
            value_align,
        } => {
            lines.push(("value", format!("{value_size} bytes, aligned to {value_align} (T rounded up to the cell)")));
            lines.push(("readers", readers.to_string()));
            let holder = match (holder_tid, holder_pid, holder_alive) {
                (None, ..) => "none".to_string(),
                (Some(tid), Some(pid), _) => format!("tid {tid} of pid {pid}, alive"),
                (Some(tid), None, Some(false)) => format!("tid {tid}, dead (gone without unlocking)"),
                (Some(tid), None, _) => format!("tid {tid}"),
            };
            lines.push(("exclusive", holder));
            lines.push(("writing", yes(*writing).to_string()));
            lines.push(("poisoned", yes(*poisoned).to_string()));
        }
        Detail::Condition { lock, waiters } => {
            lines.push(("waiters", waiters.to_string()));
            lock_lines(lines, lock);
        }
        Detail::Event { set } => lines.push(("set", yes(*set).to_string())),
        Detail::Semaphore { value, max, bounded } => {
            lines.push(("value", value.to_string()));
            lines.push(("max", if *bounded { max.to_string() } else { format!("{max} (unbounded)") }));
        }
        Detail::Barrier { parties, waiting, generation, broken } => {
            lines.push(("parties", parties.to_string()));
            lines.push(("waiting", waiting.to_string()));
            lines.push(("generation", generation.to_string()));
            lines.push(("broken", yes(*broken).to_string()));
        }
        Detail::Queue { messages, bytes_used, capacity, unfinished } => {
            lines.push(("messages", messages.to_string()));
            lines.push(("bytes used", format!("{bytes_used} of {capacity}")));
            if let Some(n) = unfinished {
                lines.push(("unfinished", n.to_string()));
            }
        }
        Detail::Table { entries, bytes, capacity } => {
            lines.push(("entries", entries.to_string()));
            lines.push(("bytes", format!("{bytes} of {capacity}")));
        }
        _ => lines.push(("detail", format!("{detail:?}"))),
    }
}

fn lock_lines(lines: &mut Vec<(&'static str, String)>, lock: &LockDetail) {
    let owner = match (lock.owner_tid, lock.owner_pid, lock.owner_alive) {
        (None, ..) if lock.owner_died => "none: its last owner died holding it".to_string(),
        (None, ..) => "none (free)".to_string(),
        (Some(tid), Some(pid), _) => format!("tid {tid} of pid {pid}, alive"),
        (Some(tid), None, Some(false)) => format!("tid {tid}, dead (gone without unlocking)"),
        (Some(tid), None, _) => format!("tid {tid}"),
    };
    lines.push(("owner", owner));
    if lock.owner_tid.is_some() {
        lines.push(("depth", lock.depth.to_string()));
    }
    lines.push(("poisoned", yes(lock.poisoned).to_string()));
    let next = if lock.poisoned_on_next_lock {
        if lock.poisoned {
            "reports poison (the flag is set; clear_poison() clears it)"
        } else {
            "reports poison (owner dead)"
        }
    } else {
        "clean"
    };
    lines.push(("next lock", next.to_string()));
}

/// `shmsync gc`: what was removed (or would be) and why, what failed, and
/// the objects of dead creators that were kept; then a summary.
pub fn gc(out: &mut impl Write, report: &GcReport) -> io::Result<()> {
    let worth = |d: &&shmsync::inspect::Decision| {
        d.action != Action::Kept || d.object.temporary || d.object.creator.is_some_and(|c| !c.alive)
    };
    let lines: Vec<_> = report.decisions.iter().filter(worth).collect();
    let name_width = lines.iter().map(|d| d.object.name.len()).max().unwrap_or(0);
    let kind_width = lines.iter().map(|d| d.object.kind.unwrap_or("-").len()).max().unwrap_or(0);
    for d in &lines {
        let word = match d.action {
            Action::Removed => "removed",
            Action::WouldRemove => "would remove",
            Action::Failed => "failed",
            _ => "kept",
        };
        let (name, kind) = (&d.object.name, d.object.kind.unwrap_or("-"));
        writeln!(out, "{word:<14}{name:<name_width$}  {kind:<kind_width$}  {}", d.reason)?;
    }
    let count = |a| report.with(a).count();
    let kept = lines.iter().filter(|d| d.action == Action::Kept).count();
    if report.dry_run {
        writeln!(
            out,
            "gc (dry run): would remove {}, would keep {kept} of dead creators; nothing was changed",
            count(Action::WouldRemove)
        )
    } else {
        writeln!(
            out,
            "gc: removed {}, kept {kept} of dead creators, failed {}",
            count(Action::Removed),
            count(Action::Failed)
        )
    }
}
