//! MQTT topic names and topic filters: validation, matching, and filter containment (for ACLs).

/// True when `topic` is a valid topic *name* for PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0']) && topic.len() <= u16::MAX as usize
}

/// True when `filter` is a valid topic *filter* for SUBSCRIBE (spec 4.7.1).
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') || filter.len() > u16::MAX as usize {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return false;
        }
        if level.contains('+') && *level != "+" {
            return false;
        }
    }
    true
}

/// True when topic name `topic` matches topic filter `filter` (both assumed valid).
///
/// Topics starting with `$` are not matched by filters starting with a wildcard (spec 4.7.2).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when every topic matched by filter `inner` is also matched by filter `outer`.
///
/// Used to decide whether an ACL entry (`outer`) permits a subscription (`inner`).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') != outer.starts_with('$')
        && (outer.starts_with('+') || outer.starts_with('#'))
    {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(il)) if il != "#" => {}
            (Some(ol), Some(il)) if ol == il && ol != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The `index`-th level of `topic` (0-based), if present.
pub fn level(topic: &str, index: usize) -> Option<&str> {
    topic.split('/').nth(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(valid_filter("#"));
        assert!(valid_filter("+/b/#"));
        assert!(valid_filter("a//b"));
        assert!(!valid_filter(""));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a#"));
        assert!(!valid_filter("a/b+"));
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1", "sport/tennis/player1/#"));
        assert!(matches(
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/#"
        ));
        assert!(matches("sport", "sport/#"));
        assert!(matches("sport/tennis/player1", "sport/+/player1"));
        assert!(!matches("sport", "sport/+"));
        assert!(matches("sport/", "sport/+"));
        assert!(matches("/finance", "+/+"));
        assert!(matches("/finance", "/+"));
        assert!(!matches("/finance", "+"));
        assert!(!matches("$SYS/x", "#"));
        assert!(!matches("$SYS/x", "+/x"));
        assert!(matches("$SYS/x", "$SYS/#"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn coverage_for_acls() {
        assert!(filter_covers("#", "a/b"));
        assert!(filter_covers("#", "a/#"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/+/c", "a/#"));
        assert!(!filter_covers("#", "$SYS/#"));
        assert!(filter_covers("$SYS/#", "$SYS/broker"));
    }

    #[test]
    fn levels() {
        assert_eq!(level("sensors/dev1/temp", 1), Some("dev1"));
        assert_eq!(level("sensors", 3), None);
    }
}
