//! `log_to_stderr`: Python's `multiprocessing.log_to_stderr`, on the `log`
//! facade. Lines read `[LEVEL/ProcessName] message`.

use std::io::Write;

use super::identity;

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line, so lines from several processes do not mix.
            let line = format!("[{}/{}] {}\n", record.level(), identity::name(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Sends `log` records at `level` and above to stderr as
/// `[LEVEL/ProcessName] message`, including shmsync's own lifecycle lines:
/// `child process calling self.run()`, `process shutting down`,
/// `process exiting with exitcode N`, and at debug level which children the
/// exit hook terminates or joins.
///
/// If another logger is installed already, only the level changes.
///
/// ```
/// shmsync::log_to_stderr(log::LevelFilter::Info);
/// log::info!("hello"); // prints "[INFO/MainProcess] hello"
/// ```
pub fn log_to_stderr(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
