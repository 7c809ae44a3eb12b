//! What an import did ([`ImportReport`], for the log) or why it could not ([`Mismatch`]: every
//! missing, unexpected and mis-shaped tensor at once).

use std::fmt;

use crate::summary::thousands;

/// A tensor that was resampled on import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resampled {
    /// Its key.
    pub name: String,
    /// Shape in the file.
    pub from: Vec<usize>,
    /// Shape in the model.
    pub to: Vec<usize>,
    /// How, in words.
    pub how: String,
}

/// What [`import_state_dict`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Tensors written into the model (all of its tensors).
    pub loaded: usize,
    /// Numbers written.
    pub values: usize,
    /// The prefix the keys were read under, when one was found rather than given.
    pub prefix_found: Option<String>,
    /// Tensors resampled to the model's input size.
    pub resampled: Vec<Resampled>,
    /// Keys of the file skipped: classifiers and BatchNorm counters.
    pub skipped: Vec<String>,
}

impl ImportReport {
    /// One line per event, for a log: what loaded, each resampling, what was skipped.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("loaded {} tensors ({} values)", self.loaded, thousands(self.values))];
        if let Some(p) = &self.prefix_found {
            out[0].push_str(&format!(" from the keys under {p:?}"));
        }
        for r in &self.resampled {
            out.push(format!("resampled {} {:?} -> {:?}: {}", r.name, r.from, r.to, r.how));
        }
        let counters = self.skipped.iter().filter(|k| k.ends_with("num_batches_tracked")).count();
        let classifier: Vec<&str> =
            self.skipped.iter().filter(|k| !k.ends_with("num_batches_tracked")).map(String::as_str).collect();
        if !classifier.is_empty() {
            out.push(format!("skipped the classifier: {}", classifier.join(", ")));
        }
        if counters > 0 {
            out.push(format!("skipped {counters} BatchNorm num_batches_tracked counters"));
        }
        out
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("; "))
    }
}

/// A tensor whose shape in the file differs from the model's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MisShaped {
    /// Its key.
    pub name: String,
    /// Shape in the file.
    pub file: Vec<usize>,
    /// Shape in the model.
    pub model: Vec<usize>,
    /// Why it could not be resampled, when resampling was tried.
    pub note: Option<String>,
}

/// Everything that keeps a state dict from loading into a model, found in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Tensors of the model not in the file, with the model's shapes.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Keys of the file the model does not have (classifiers and counters aside), with their
    /// shapes.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Tensors of another shape.
    pub mis_shaped: Vec<MisShaped>,
    /// A likely cause, when one is recognised.
    pub hint: Option<String>,
}

impl Mismatch {
    /// `true` when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

/// At most this many keys of each kind in the message.
const LIST: usize = 8;

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut parts: Vec<String> = items.iter().take(LIST).map(show).collect();
    if items.len() > LIST {
        parts.push(format!("and {} more", items.len() - LIST));
    }
    parts.join(", ")
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing ({})",
                self.missing.len(),
                list(&self.missing, |(k, s)| format!("{k} {s:?}"))
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected ({})",
                self.unexpected.len(),
                list(&self.unexpected, |(k, s)| format!("{k} {s:?}"))
            ));
        }
        if !self.mis_shaped.is_empty() {
            parts.push(format!(
                "{} mis-shaped ({})",
                self.mis_shaped.len(),
                list(&self.mis_shaped, |m| {
                    let note = m.note.as_ref().map(|n| format!(": {n}")).unwrap_or_default();
                    format!("{} file {:?} vs model {:?}{note}", m.name, m.file, m.model)
                })
            ));
        }
        write!(f, "the state dict does not match the model: {}", parts.join("; "))?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}
