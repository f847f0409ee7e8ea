//! Where output goes: results on stdout (text or JSON), progress and
//! problems on stderr, colour only on a terminal and never with `NO_COLOR`.

use std::io::Write;

use sm_driver::doctor::Verdict;

/// The two output streams and how to write to them.
pub struct Console {
    out: Box<dyn Write>,
    err: Box<dyn Write>,
    color: bool,
}

impl Console {
    /// Output to `out` and `err`, coloured when `color`.
    #[must_use]
    pub fn new(out: Box<dyn Write>, err: Box<dyn Write>, color: bool) -> Self {
        Self { out, err, color }
    }

    /// One line of the result.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// A JSON result.
    pub fn json(&mut self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
        let _ = writeln!(self.out, "{text}");
    }

    /// A progress or problem line, on stderr.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.err, "{text}");
        let _ = self.err.flush();
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `PASS`, `WARN` or `FAIL`, coloured.
    #[must_use]
    pub fn verdict(&self, verdict: Verdict) -> String {
        match verdict {
            Verdict::Pass => self.paint("PASS", "32"),
            Verdict::Warn => self.paint("WARN", "33"),
            Verdict::Fail => self.paint("FAIL", "31;1"),
        }
    }

    /// Text that must stand out (a degraded path, a failed host).
    #[must_use]
    pub fn alert(&self, text: &str) -> String {
        self.paint(text, "31;1")
    }

    /// Text that is good news.
    #[must_use]
    pub fn good(&self, text: &str) -> String {
        self.paint(text, "32")
    }
}
