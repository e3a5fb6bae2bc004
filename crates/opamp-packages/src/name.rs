//! Package names that are safe to use as file names, and the map keys that hold them.

use std::fmt;

use crate::error::{InvalidNameReason, NameError};

/// Longest name accepted, in bytes: the usual file-name limit of Linux, macOS and Windows file
/// systems.
pub const MAX_NAME_BYTES: usize = 255;

/// A non-empty package name that is safe to use as a single file-name component.
///
/// Supervisors store each package under a directory named after it, so a name that could leave
/// that directory (`..`, `a/b`, `a\b`), that a C API would cut short (NUL) or that a terminal
/// would interpret (control characters) is refused when the value is built. Holding a
/// `PackageName` is the proof that the check ran.
///
/// ```
/// use opamp_packages::{InvalidNameReason, PackageName};
///
/// let name = PackageName::new("otelcol-contrib")?;
/// assert_eq!(name.as_str(), "otelcol-contrib");
///
/// let refused = PackageName::new("../etc").unwrap_err();
/// assert_eq!(refused.reason(), &InvalidNameReason::ContainsSlash);
/// # Ok::<(), opamp_packages::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageName(String);

impl PackageName {
    /// Checks `name` and wraps it.
    ///
    /// # Errors
    /// [`NameError`] naming the first rule the name breaks (see [`InvalidNameReason`]).
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        match first_violation(&name) {
            None => Ok(Self(name)),
            Some(reason) => Err(NameError::new(&name, reason)),
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives back the inner `String`.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PackageName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PackageName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for PackageName {
    type Error = NameError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

/// Returns the first rule `name` breaks, checked in a fixed order so the reason is stable.
fn first_violation(name: &str) -> Option<InvalidNameReason> {
    if name.is_empty() {
        return Some(InvalidNameReason::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(InvalidNameReason::TooLong {
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if name == "." || name == ".." {
        return Some(InvalidNameReason::DotOrDotDot);
    }
    for character in name.chars() {
        let reason = match character {
            '/' => InvalidNameReason::ContainsSlash,
            '\\' => InvalidNameReason::ContainsBackslash,
            '\0' => InvalidNameReason::ContainsNul,
            c if c.is_control() => InvalidNameReason::ContainsControl { character: c },
            _ => continue,
        };
        return Some(reason);
    }
    None
}

/// A key of `PackagesAvailable.packages` / `PackageStatuses.packages`, made explicit.
///
/// The OpAMP specification (v0.18.0, "Packages") allows a lone top-level package to have an
/// empty name. Rather than letting an empty string flow into code that builds paths from names,
/// that case is its own variant: supervisors choose a fixed directory for
/// [`PackageKey::UnnamedTopLevel`] and use [`PackageName`] for everything else. Only a
/// `TopLevel` package may be unnamed; the offer builder and the sync planner enforce that, and
/// that it is the only top-level package of the offer.
///
/// Ordering puts `UnnamedTopLevel` first, matching the byte order of its wire key `""`.
///
/// ```
/// use opamp_packages::{PackageKey, PackageName};
///
/// assert_eq!(PackageKey::parse("")?, PackageKey::UnnamedTopLevel);
/// assert_eq!(PackageKey::parse("otelcol")?.wire_key(), "otelcol");
/// assert!(PackageKey::parse("a/b").is_err());
/// # Ok::<(), opamp_packages::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PackageKey {
    /// The empty key: the single top-level package of an agent, without a name.
    UnnamedTopLevel,
    /// A package with a validated name.
    Named(PackageName),
}

impl PackageKey {
    /// Reads a wire key: `""` is [`PackageKey::UnnamedTopLevel`], anything else must be a valid
    /// [`PackageName`].
    ///
    /// # Errors
    /// [`NameError`] when a non-empty key is not a valid package name.
    pub fn parse(wire_key: &str) -> Result<Self, NameError> {
        if wire_key.is_empty() {
            Ok(Self::UnnamedTopLevel)
        } else {
            PackageName::new(wire_key).map(Self::Named)
        }
    }

    /// The key as it appears on the wire (`""` for the unnamed top-level package).
    #[must_use]
    pub fn wire_key(&self) -> &str {
        match self {
            Self::UnnamedTopLevel => "",
            Self::Named(name) => name.as_str(),
        }
    }

    /// The name, unless this is the unnamed top-level package.
    #[must_use]
    pub fn name(&self) -> Option<&PackageName> {
        match self {
            Self::UnnamedTopLevel => None,
            Self::Named(name) => Some(name),
        }
    }
}

impl From<PackageName> for PackageKey {
    fn from(name: PackageName) -> Self {
        Self::Named(name)
    }
}

impl fmt::Display for PackageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnnamedTopLevel => f.write_str("<unnamed top-level>"),
            Self::Named(name) => f.write_str(name.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    fn reason(name: &str) -> InvalidNameReason {
        PackageName::new(name).unwrap_err().reason().clone()
    }

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "otelcol",
            "otelcol-contrib",
            "addon_1.2",
            "é-ünïcode",
            ".hidden",
            "a..b",
        ] {
            assert_eq!(PackageName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(reason(""), InvalidNameReason::Empty);
    }

    #[test]
    fn refuses_dot_and_dot_dot() {
        assert_eq!(reason("."), InvalidNameReason::DotOrDotDot);
        assert_eq!(reason(".."), InvalidNameReason::DotOrDotDot);
    }

    #[test]
    fn refuses_separators() {
        assert_eq!(reason("a/b"), InvalidNameReason::ContainsSlash);
        assert_eq!(reason("/abs"), InvalidNameReason::ContainsSlash);
        assert_eq!(reason("../x"), InvalidNameReason::ContainsSlash);
        assert_eq!(reason("a\\b"), InvalidNameReason::ContainsBackslash);
        assert_eq!(reason("..\\x"), InvalidNameReason::ContainsBackslash);
    }

    #[test]
    fn refuses_nul_and_control_characters() {
        assert_eq!(reason("a\0b"), InvalidNameReason::ContainsNul);
        assert_eq!(
            reason("a\nb"),
            InvalidNameReason::ContainsControl { character: '\n' }
        );
        assert_eq!(
            reason("a\u{7f}"),
            InvalidNameReason::ContainsControl {
                character: '\u{7f}'
            }
        );
        assert_eq!(
            reason("a\u{9b}"),
            InvalidNameReason::ContainsControl {
                character: '\u{9b}'
            }
        );
    }

    #[test]
    fn length_limit_is_in_bytes() {
        assert!(PackageName::new("a".repeat(255)).is_ok());
        assert_eq!(
            reason(&"a".repeat(256)),
            InvalidNameReason::TooLong { len: 256, max: 255 }
        );
        // 128 two-byte characters: 128 chars but 256 bytes.
        assert_eq!(
            reason(&"é".repeat(128)),
            InvalidNameReason::TooLong { len: 256, max: 255 }
        );
    }

    #[test]
    fn error_message_names_the_reason_and_escapes_the_name() {
        let message = PackageName::new("a\nb").unwrap_err().to_string();
        assert!(message.contains("\"a\\nb\""), "{message}");
        assert!(message.contains("control character"), "{message}");
    }

    #[test]
    fn error_keeps_a_bounded_copy_of_huge_names() {
        let error = PackageName::new("x".repeat(100_000)).unwrap_err();
        assert!(error.name().len() <= 64 + 3, "{}", error.name().len());
    }

    #[test]
    fn key_round_trips_and_orders_like_the_wire() {
        let unnamed = PackageKey::parse("").unwrap();
        let named = PackageKey::parse("a").unwrap();
        assert_eq!(unnamed.wire_key(), "");
        assert_eq!(named.wire_key(), "a");
        assert!(unnamed < named);
        assert_eq!(named.name().unwrap().as_str(), "a");
        assert_eq!(unnamed.name(), None);
        assert_eq!(
            PackageKey::parse("..").unwrap_err().reason(),
            &InvalidNameReason::DotOrDotDot
        );
    }

    /// Strings rich in the characters that matter for paths.
    fn path_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "[./\\\\a\\x00\\n-]{0,6}",
            ".{0,12}",
            Just("..".to_owned()),
            Just(".".to_owned()),
        ]
    }

    proptest! {
        /// Whatever is accepted is exactly one ordinary path component: it can name an entry
        /// of a directory and nothing else.
        #[test]
        fn accepted_names_are_single_normal_components(text in path_like()) {
            if let Ok(name) = PackageName::new(text.clone()) {
                let components: Vec<_> = Path::new(name.as_str()).components().collect();
                prop_assert_eq!(components.len(), 1, "{:?}", text);
                prop_assert!(matches!(components[0], Component::Normal(c) if c == name.as_str()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// On a real file system, a file created under an accepted name lands directly inside
        /// the directory, under that exact name.
        #[test]
        fn accepted_names_create_files_inside_the_directory(text in path_like()) {
            let Ok(name) = PackageName::new(text) else { return Ok(()) };
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("packages");
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(name.as_str()), b"x").unwrap();
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            prop_assert_eq!(entries, vec![std::ffi::OsString::from(name.as_str())]);
            // Nothing appeared next to the packages directory.
            prop_assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        }
    }
}
