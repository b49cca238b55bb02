//! The study's report: the figures of every row (median, min–max, runs,
//! percentiles, CPU per operation, fairness, × baseline, × floor, × best
//! peer), the machine they came from, and `report.md` / `report.json`
//! written from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::model::{Key, PlotKind, Sample, Section, Unit};
use crate::sections;

/// Everything one probe produced in one run of the study.
pub struct RowData {
    pub key: Key,
    pub unit: Unit,
    pub is_floor: bool,
    /// The shmsync row this one is set beside (see `Probe::counterpart`).
    pub counterpart: Option<String>,
    pub samples: Vec<Sample>,
    /// Wall time its samples took, set-up and checks included.
    pub seconds: f64,
}

/// Everything one section produced.
pub struct SectionData {
    pub section: &'static Section,
    pub rounds: usize,
    pub seconds: f64,
    pub rows: Vec<RowData>,
    /// Said under the section's heading (e.g. why it has no rows).
    pub notes: Vec<String>,
}

/// The machine the numbers came from.
#[derive(Serialize, Clone)]
pub struct Machine {
    pub cpu: String,
    /// Logical CPUs online.
    pub cpus: usize,
    /// Physical cores, when /proc/cpuinfo says.
    pub cores: Option<usize>,
    pub kernel: String,
    pub glibc: String,
    pub vm: bool,
    /// Why `vm` is what it is.
    pub vm_evidence: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let cpu = field("model name").or_else(|| field("Model")).unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        // Distinct (physical id, core id) pairs, when the kernel lists them.
        let mut pairs = std::collections::BTreeSet::new();
        let (mut phys, mut core) = (None, None);
        for line in cpuinfo.lines() {
            if let Some((k, v)) = line.split_once(':') {
                match k.trim() {
                    "physical id" => phys = Some(v.trim().to_string()),
                    "core id" => core = Some(v.trim().to_string()),
                    _ => {}
                }
            } else if line.trim().is_empty() {
                if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                    pairs.insert((p, c));
                }
            }
        }
        let cores = (!pairs.is_empty()).then_some(pairs.len());
        let hypervisor_flag = field("flags").is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"));
        let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default().trim().to_string();
        let product = std::fs::read_to_string("/sys/class/dmi/id/product_name").unwrap_or_default().trim().to_string();
        const VM_VENDORS: [&str; 9] =
            ["QEMU", "KVM", "VMware", "Xen", "innotek", "Microsoft Corporation", "Amazon EC2", "Google", "Parallels"];
        let vendor_vm = VM_VENDORS.iter().any(|v| vendor.contains(v) || product.contains(v));
        let mut evidence = Vec::new();
        if hypervisor_flag {
            evidence.push("the CPU's `hypervisor` flag".to_string());
        }
        if !vendor.is_empty() || !product.is_empty() {
            evidence.push(format!("DMI vendor/product {vendor:?}/{product:?}"));
        }
        if evidence.is_empty() {
            evidence.push("no hypervisor flag, no DMI information".into());
        }
        Machine {
            cpu,
            cpus,
            cores,
            kernel: kernel_release(),
            glibc: glibc_version(),
            vm: hypervisor_flag || vendor_vm,
            vm_evidence: evidence.join("; "),
        }
    }
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: an all-zero utsname (empty strings) is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a writable utsname; uname fills it with NUL-terminated
    // strings.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".into();
    }
    // SAFETY: `release` is NUL-terminated within its array, as uname promises
    // (and the zeroed array guarantees at worst).
    unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned()
}

/// glibc's version, from the running library.
fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version takes nothing and returns a static
    // NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    v.to_string_lossy().into_owned()
}

/// Today's date and time, UTC, as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02} UTC")
}

/// One row's figures, as the tables, plots and JSON show them. Every
/// figure but `samples` is the median over the runs (one per round) of that
/// run's figure, unless its name says otherwise.
#[derive(Serialize, Clone)]
pub struct Row {
    pub mechanism: String,
    pub variant: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    /// Per-operation percentiles, in the row's unit.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    /// CPU time (user + system, every process involved) per operation, ns.
    pub cpu_ns_per_op: Option<f64>,
    /// CPU time over wall time: how many CPUs were busy on average.
    pub cores: Option<f64>,
    /// The share of the CPU time spent in the kernel, when known.
    pub sys_share: Option<f64>,
    /// Fairness of a contended lock: the smallest and largest share of the
    /// acquisitions one process took, the longest run of consecutive
    /// acquisitions by one process (median, and the worst run's), and the
    /// acquisitions per change of holder.
    pub share_min: Option<f64>,
    pub share_max: Option<f64>,
    pub longest_run: Option<f64>,
    pub longest_run_max: Option<u64>,
    pub mean_run: Option<f64>,
    pub is_floor: bool,
    /// The shmsync row this one is set beside, if it is a Python row.
    pub counterpart: Option<String>,
    /// How many times worse than the floor (1.0 = as good).
    pub x_floor: Option<f64>,
    /// How many times worse than the best row of the same variant and unit
    /// (1.0 = the best).
    pub x_best: Option<f64>,
    /// How many times better than the section's baseline row of the same
    /// variant (above 1: better; 1.0 = the baseline).
    pub x_baseline: Option<f64>,
    /// Every run's value, in round order.
    pub samples: Vec<f64>,
    /// Wall time all its samples took, set-up and checks included.
    pub seconds: f64,
}

#[derive(Serialize)]
pub struct SectionReport {
    pub slug: &'static str,
    /// The numbered heading.
    pub title: String,
    pub about: &'static str,
    pub baseline: Option<&'static str>,
    #[serde(skip)]
    pub plot: PlotKind,
    pub rounds: usize,
    pub seconds: f64,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

/// A row of the "Python vs shmsync" table.
#[derive(Serialize)]
pub struct Comparison {
    pub section: &'static str,
    pub python: String,
    pub shmsync: String,
    pub unit: &'static str,
    pub python_median: f64,
    pub shmsync_median: Option<f64>,
    /// How many times better shmsync is (below 1: worse).
    pub shmsync_advantage: Option<f64>,
    pub python_cpu_ns_per_op: Option<f64>,
    pub shmsync_cpu_ns_per_op: Option<f64>,
}

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub date: String,
    pub mode: &'static str,
    pub command: String,
    pub seconds: f64,
    pub sections: Vec<SectionReport>,
    pub python_vs_shmsync: Vec<Comparison>,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn median_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(median(&v))
}

/// How many times worse `value` is than `reference` in `unit`'s direction.
fn times_worse(value: f64, reference: f64, higher_is_better: bool) -> f64 {
    if higher_is_better {
        reference / value
    } else {
        value / reference
    }
}

/// One row's figures from its samples.
fn row(r: &RowData) -> Row {
    let mut values: Vec<f64> = r.samples.iter().map(|s| s.value).collect();
    let samples = values.clone();
    values.sort_by(f64::total_cmp);
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| median_of(r.samples.iter().filter_map(f));
    Row {
        mechanism: r.key.mechanism.clone(),
        variant: r.key.variant.clone(),
        unit: r.unit.label(),
        higher_is_better: r.unit.higher_is_better(),
        median: median(&values),
        min: values[0],
        max: values[values.len() - 1],
        runs: values.len(),
        p50: of(&|s| s.percentiles.map(|p| p.p50)),
        p99: of(&|s| s.percentiles.map(|p| p.p99)),
        p999: of(&|s| s.percentiles.map(|p| p.p999)),
        cpu_ns_per_op: of(&|s| s.cpu.map(|c| c.ns_per_op)),
        cores: of(&|s| s.cpu.map(|c| c.ns_per_op / r.unit.wall_ns_per_op(s.value))),
        sys_share: of(&|s| s.cpu.and_then(|c| c.sys_share)),
        share_min: of(&|s| s.fairness.map(|f| f.share_min)),
        share_max: of(&|s| s.fairness.map(|f| f.share_max)),
        longest_run: of(&|s| s.fairness.map(|f| f.longest_run as f64)),
        longest_run_max: r.samples.iter().filter_map(|s| s.fairness.map(|f| f.longest_run)).max(),
        mean_run: of(&|s| s.fairness.map(|f| f.mean_run)),
        is_floor: r.is_floor,
        counterpart: r.counterpart.clone(),
        x_floor: None,
        x_best: None,
        x_baseline: None,
        samples,
        seconds: r.seconds,
    }
}

/// Computes the figures of a section's rows, grouped by variant (in order of
/// first appearance), best first within a group.
fn section_rows(data: &SectionData) -> Vec<Row> {
    let mut rows: Vec<Row> = data.rows.iter().filter(|r| !r.samples.is_empty()).map(row).collect();
    // The floor of a row: a floor of the same unit and variant, else the
    // only floor of that unit in the section.
    let floors: Vec<Row> = rows.iter().filter(|r| r.is_floor).cloned().collect();
    for row in &mut rows {
        let same_unit: Vec<&Row> = floors.iter().filter(|f| f.unit == row.unit).collect();
        let floor = same_unit.iter().find(|f| f.variant == row.variant).or_else(|| {
            if same_unit.len() == 1 {
                same_unit.first()
            } else {
                None
            }
        });
        row.x_floor = floor.map(|f| times_worse(row.median, f.median, row.higher_is_better));
    }
    let peers = rows.clone();
    for row in &mut rows {
        // The section's baseline of the same variant and unit.
        if let Some(name) = data.section.baseline {
            let base = peers.iter().find(|p| p.mechanism == name && p.variant == row.variant && p.unit == row.unit);
            row.x_baseline = base.map(|b| 1.0 / times_worse(row.median, b.median, row.higher_is_better));
        }
        if row.is_floor {
            continue;
        }
        // The best peer: the best non-floor median of the same variant and unit.
        let best = peers
            .iter()
            .filter(|p| !p.is_floor && p.variant == row.variant && p.unit == row.unit)
            .map(|p| p.median)
            .reduce(|a, b| if (a > b) == row.higher_is_better { a } else { b });
        row.x_best = best.map(|b| times_worse(row.median, b, row.higher_is_better));
    }
    let mut variants: Vec<String> = Vec::new();
    for r in &data.rows {
        if !variants.contains(&r.key.variant) {
            variants.push(r.key.variant.clone());
        }
    }
    rows.sort_by(|a, b| {
        let va = variants.iter().position(|v| *v == a.variant);
        let vb = variants.iter().position(|v| *v == b.variant);
        let by_quality = |r: &Row| if r.higher_is_better { -r.median } else { r.median };
        va.cmp(&vb).then(a.unit.cmp(b.unit)).then(by_quality(a).total_cmp(&by_quality(b)))
    });
    rows
}

impl Report {
    pub fn build(machine: Machine, quick: bool, command: String, seconds: f64, data: &[SectionData]) -> Report {
        let sections: Vec<SectionReport> = data
            .iter()
            .map(|d| SectionReport {
                slug: d.section.slug,
                title: sections::heading(d.section),
                about: d.section.about,
                baseline: d.section.baseline,
                plot: d.section.plot,
                rounds: d.rounds,
                seconds: d.seconds,
                notes: d.notes.clone(),
                rows: section_rows(d),
            })
            .collect();
        let mut python_vs_shmsync = Vec::new();
        for sec in &sections {
            for p in sec.rows.iter() {
                let Some(ours) = &p.counterpart else { continue };
                let s = sec.rows.iter().find(|r| &r.mechanism == ours && r.variant == p.variant && r.unit == p.unit);
                let label = |r: &Row| {
                    if r.variant.is_empty() {
                        r.mechanism.clone()
                    } else {
                        format!("{} [{}]", r.mechanism, r.variant)
                    }
                };
                python_vs_shmsync.push(Comparison {
                    section: sec.slug,
                    python: label(p),
                    shmsync: s.map_or(format!("{ours} (not measured in this run)"), label),
                    unit: p.unit,
                    python_median: p.median,
                    shmsync_median: s.map(|s| s.median),
                    shmsync_advantage: s.map(|s| times_worse(p.median, s.median, p.higher_is_better)),
                    python_cpu_ns_per_op: p.cpu_ns_per_op,
                    shmsync_cpu_ns_per_op: s.and_then(|s| s.cpu_ns_per_op),
                });
            }
        }
        Report {
            machine,
            date: now_utc(),
            mode: if quick { "quick (IPC_COST_QUICK=1: a smoke run, not for quoting)" } else { "full" },
            command,
            seconds,
            sections,
            python_vs_shmsync,
        }
    }

    /// Writes report.md and report.json into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown()).map_err(|e| format!("write {}: {e}", md.display()))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| format!("serialise the report: {e}"))?;
        let path = dir.join("report.json");
        std::fs::write(&path, json + "\n").map_err(|e| format!("write {}: {e}", path.display()))
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# What does IPC cost? (shmsync's ipc_cost study)\n");
        let cores = m.cores.map_or(String::new(), |c| format!(", {c} physical cores"));
        let _ = writeln!(s, "- Machine: {}, {} logical CPUs{cores}", m.cpu, m.cpus);
        let _ = writeln!(s, "- Virtual machine: {} ({})", if m.vm { "yes" } else { "no sign of one" }, m.vm_evidence);
        let _ = writeln!(s, "- Kernel {}, glibc {}", m.kernel, m.glibc);
        let _ = writeln!(s, "- Date: {}; mode: {}; {:.0} s in all", self.date, self.mode, self.seconds);
        let _ = writeln!(s, "- Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Ratios are the headline; absolute numbers are this machine's. Median, min and max are over the \
             runs (one per round; the mechanisms of a section take turns within each round, so a noisy \
             neighbour hurts them all alike). Every other figure is the median over the runs of that run's \
             figure:\n\n\
             - **p50 / p99 / p99.9**: percentiles of the individual operations of a run, in the row's unit.\n\
             - **CPU/op**: user + system CPU time per operation, summed over every process involved, each \
             measured with `getrusage` over its own timed window (and checked against the children's whole \
             lives from `getrusage(RUSAGE_CHILDREN)`). **cores** is CPU time over wall time: 2.0 means two \
             processes were busy all along, 0.2 that they mostly slept.\n\
             - **× floor**: how many times worse than the section's floor (the bare mechanism underneath); \
             **× best**: how many times worse than the best row of the same variant (1.00 = the best); both \
             larger is worse, whichever way the unit points. **× tuned pipe**: how many times *better* than \
             the tuned pipe of the same variant (above 1: faster).\n"
        );
        if !self.python_vs_shmsync.is_empty() {
            let _ = writeln!(s, "## Python vs shmsync\n");
            let _ = writeln!(s, "| Python | median | CPU/op | shmsync | median | CPU/op | shmsync is |");
            let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|");
            for c in &self.python_vs_shmsync {
                let adv = c.shmsync_advantage.map_or("–".into(), |a| {
                    if a >= 1.0 {
                        format!("{} faster", times(a))
                    } else {
                        format!("{} slower", times(1.0 / a))
                    }
                });
                let _ = writeln!(
                    s,
                    "| {} | {} {} | {} | {} | {} | {} | {adv} |",
                    c.python,
                    num(c.python_median),
                    c.unit,
                    opt_ns(c.python_cpu_ns_per_op),
                    c.shmsync,
                    c.shmsync_median.map_or("–".into(), |v| format!("{} {}", num(v), c.unit)),
                    opt_ns(c.shmsync_cpu_ns_per_op),
                );
            }
            let _ = writeln!(
                s,
                "\nEach Python row runs the same protocol with the same counts as the shmsync row beside it, \
                 in the same section's rounds. Python's figures include the interpreter's own loop (tens of ns \
                 per iteration); start-up is not timed.\n"
            );
        }
        for sec in &self.sections {
            section_markdown(&mut s, sec);
        }
        s
    }
}

/// Appends one section's heading, description, notes and table.
fn section_markdown(s: &mut String, sec: &SectionReport) {
    let _ = writeln!(s, "## {}\n", sec.title);
    let _ = writeln!(s, "{}\n", sec.about);
    let _ = write!(s, "{} rounds, {:.0} s.", sec.rounds, sec.seconds);
    if !sec.rows.is_empty() {
        let _ = write!(s, " Plot: `{}`", plot_name(sec.slug));
    }
    let _ = writeln!(s, "\n");
    for note in &sec.notes {
        let _ = writeln!(s, "> {note}\n");
    }
    if sec.rows.is_empty() {
        let _ = writeln!(s, "_No measurements in this section._\n");
        return;
    }
    let any = |f: &dyn Fn(&Row) -> bool| sec.rows.iter().any(f);
    let pct = any(&|r| r.p50.is_some());
    let cpu = any(&|r| r.cpu_ns_per_op.is_some());
    let fair = any(&|r| r.share_min.is_some());
    let base = sec.baseline.filter(|_| any(&|r| r.x_baseline.is_some()));
    let floor = any(&|r| r.x_floor.is_some());
    let mut head = vec!["mechanism", "variant", "median", "min–max", "runs"];
    if pct {
        head.extend(["p50", "p99", "p99.9"]);
    }
    if cpu {
        head.extend(["CPU/op", "cores"]);
    }
    if fair {
        head.extend(["share min–max", "longest run", "mean run"]);
    }
    let base_head = base.map(|b| format!("× {b}"));
    if let Some(b) = &base_head {
        head.push(b);
    }
    if floor {
        head.push("× floor");
    }
    head.push("× best");
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let align: Vec<&str> = head.iter().enumerate().map(|(i, _)| if i < 2 { "---" } else { "---:" }).collect();
    let _ = writeln!(s, "|{}|", align.join("|"));
    for r in &sec.rows {
        let name = if r.is_floor { format!("{} (floor)", r.mechanism) } else { r.mechanism.clone() };
        let mut cells = vec![
            name,
            r.variant.clone(),
            format!("{} {}", num(r.median), r.unit),
            format!("{}–{}", num(r.min), num(r.max)),
            r.runs.to_string(),
        ];
        if pct {
            cells.extend([opt(r.p50), opt(r.p99), opt(r.p999)]);
        }
        if cpu {
            cells.push(opt_ns(r.cpu_ns_per_op));
            cells.push(r.cores.map_or("–".into(), |c| format!("{c:.2}")));
        }
        if fair {
            cells.push(match (r.share_min, r.share_max) {
                (Some(a), Some(b)) => format!("{:.1}–{:.1} %", a * 100.0, b * 100.0),
                _ => "–".into(),
            });
            cells.push(opt(r.longest_run));
            cells.push(opt(r.mean_run));
        }
        if base.is_some() {
            cells.push(r.x_baseline.map_or("–".into(), times));
        }
        if floor {
            cells.push(r.x_floor.map_or("–".into(), times));
        }
        cells.push(match r.x_best {
            Some(x) if x <= 1.0 + 1e-9 => "**1.00**".to_string(),
            Some(x) => times(x),
            None => "–".into(),
        });
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(s);
}

/// The SVG file of a section's plot.
pub fn plot_name(slug: &str) -> String {
    format!("{slug}.svg")
}

/// A number with about three significant digits, and k / M for large ones.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        // Three significant digits, however small.
        let decimals = (2.0 - a.log10().floor()).clamp(3.0, 12.0) as usize;
        format!("{v:.decimals$}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), num)
}

/// A time given in ns, in the unit that suits it: `10.7 ns`, `2.31 µs`.
pub fn duration_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{} s", num(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{} ms", num(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", num(ns / 1e3))
    } else {
        format!("{} ns", num(ns))
    }
}

fn opt_ns(v: Option<f64>) -> String {
    v.map_or("–".into(), duration_ns)
}

/// A ratio, e.g. `3.2×`.
fn times(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.2}×")
    }
}

/// The rows of a section grouped by unit, for plotting.
pub fn by_unit(rows: &[Row]) -> BTreeMap<&'static str, Vec<&Row>> {
    let mut map: BTreeMap<&'static str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        map.entry(r.unit).or_default().push(r);
    }
    map
}
