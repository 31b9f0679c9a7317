//! Span names of the form `"{method} {route}"`, made once per method and
//! route and reused by every request after.
//!
//! A SERVER span is named after the matched route and a CLIENT span after
//! its URL template: a few dozen names per service, asked for on every
//! request. Formatting one costs an allocation and a copy per span (and
//! its free when the span ends); here each name is formatted once, kept
//! for the life of the process, and handed out as a `&'static str`, which
//! a span holds without copying. At most [`MAX_NAMES`] are kept, so a
//! caller passing unbounded values (methods a client made up) cannot grow
//! the table without limit: past it, names are formatted per call.

use std::borrow::Cow;
use std::sync::RwLock;

/// At most this many names are kept.
pub const MAX_NAMES: usize = 256;

static NAMES: Names = Names::new(MAX_NAMES);

/// `"{method} {route}"`, borrowed from the process's table when it is (or
/// can be) kept there, formatted when the table is full.
pub fn method_route(method: &str, route: &str) -> Cow<'static, str> {
    NAMES.get(method, route)
}

/// The route of a name made by [`method_route`] for `method`: the part
/// after `"{method} "`, as `'static` as the name.
pub fn route_of(name: &'static str, method: &str) -> Option<&'static str> {
    name.strip_prefix(method)?.strip_prefix(' ')
}

/// A table of names, at most `max` of them.
struct Names {
    names: RwLock<Vec<&'static str>>,
    max: usize,
}

impl Names {
    const fn new(max: usize) -> Self {
        Self {
            names: RwLock::new(Vec::new()),
            max,
        }
    }

    fn get(&self, method: &str, route: &str) -> Cow<'static, str> {
        let matches = |name: &str| {
            name.len() == method.len() + 1 + route.len()
                && name.as_bytes()[method.len()] == b' '
                && name.starts_with(method)
                && name.ends_with(route)
        };
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.iter().copied().find(|n| matches(n)) {
            return Cow::Borrowed(name);
        }
        let full = names.len() >= self.max;
        drop(names);
        let name = format!("{method} {route}");
        if full {
            return Cow::Owned(name);
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have added it, or filled the table, meanwhile.
        if let Some(kept) = names.iter().copied().find(|n| matches(n)) {
            return Cow::Borrowed(kept);
        }
        if names.len() >= self.max {
            return Cow::Owned(name);
        }
        let name: &'static str = Box::leak(name.into_boxed_str());
        names.push(name);
        Cow::Borrowed(name)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_made_once_and_then_borrowed() {
        let first = method_route("POST", "/names-test/login");
        let again = method_route("POST", "/names-test/login");
        assert_ne!(first, method_route("GET", "/names-test/login"));
        assert_eq!(first, "POST /names-test/login");
        let (Cow::Borrowed(a), Cow::Borrowed(b)) = (&first, &again) else {
            panic!("kept names are borrowed: {first:?} {again:?}");
        };
        assert!(std::ptr::eq(*a, *b), "the same string, not a copy");
        assert_eq!(route_of(a, "POST"), Some("/names-test/login"));
        assert_eq!(route_of(a, "GET"), None);
    }

    #[test]
    fn names_differing_only_in_the_split_are_not_confused() {
        let names = Names::new(8);
        assert_eq!(names.get("GET", "/x"), "GET /x");
        // The same length, the same first and last bytes: only the space's
        // place tells them apart.
        assert_eq!(names.get("GE", "T/x"), "GE T/x");
        assert_eq!(names.get("GET/", "x"), "GET/ x");
        assert_eq!(names.get("GET", "/x"), "GET /x");
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn past_the_limit_names_are_formatted_per_call() {
        let names = Names::new(2);
        assert!(matches!(names.get("GET", "/a"), Cow::Borrowed(_)));
        assert!(matches!(names.get("GET", "/b"), Cow::Borrowed(_)));
        let late = names.get("GET", "/c");
        assert_eq!(late, "GET /c");
        assert!(
            matches!(late, Cow::Owned(_)),
            "a full table keeps nothing more"
        );
        assert_eq!(names.len(), 2);
        assert!(
            matches!(names.get("GET", "/a"), Cow::Borrowed(_)),
            "what it kept is still handed out"
        );
    }
}
