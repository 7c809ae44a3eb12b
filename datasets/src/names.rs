//! Forgiving matching of names a user types (dataset sources here; backbones, recipes and
//! pipeline options in the crates above): `-`, `_` and spaces are the same, case does not
//! matter, and an unknown name comes back with the closest known one when it is near enough to
//! be a slip. The one copy of this rule; `siamlab_trainer::names` and the pipeline's option
//! parsers call it.
//!
//! ```
//! use siamlab_datasets::names::match_name;
//! assert_eq!(match_name("CIFAR-10", &["cifar10", "stl10"]), Ok("cifar10"));
//! assert_eq!(match_name("cifr10", &["cifar10", "stl10"]), Err(Some("cifar10")));
//! assert_eq!(match_name("imagenet", &["cifar10", "stl10"]), Err(None));
//! ```

/// What a name is compared by: lower case, without `-`, `_` and spaces.
pub fn name_key(name: &str) -> String {
    name.trim().chars().filter(|c| !matches!(c, '-' | '_' | ' ')).flat_map(char::to_lowercase).collect()
}

/// The known name `given` means; otherwise `Err` with the closest known name when it is within
/// a third of its letters (at least two edits), else `Err(None)`.
pub fn match_name<'a>(given: &str, known: &[&'a str]) -> Result<&'a str, Option<&'a str>> {
    let k = name_key(given);
    if let Some(&name) = known.iter().find(|n| name_key(n) == k) {
        return Ok(name);
    }
    Err(known
        .iter()
        .map(|&n| (strsim::levenshtein(&k, &name_key(n)), n))
        .min_by_key(|&(d, _)| d)
        .filter(|&(d, n)| d <= 2.max(name_key(n).len() / 3))
        .map(|(_, n)| n))
}
