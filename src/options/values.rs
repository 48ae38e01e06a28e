//! Splitting and parsing option values: option lists, lowerdir, numbers, mappings.

#[allow(unused_imports)]
use super::*;

/// Splits an `-o` argument at commas, except inside `"..."` or after a backslash. Empty fields
/// are dropped; quotes and backslashes stay in the fields.
pub(super) fn split_option_list(list: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < list.len() {
        match list[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                fields.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    fields.push(&list[start.min(list.len())..]);
    fields.retain(|f| !f.is_empty());
    fields
}

/// Removes backslash escapes: `\X` is `X` (a trailing lone backslash stays).
pub(super) fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut it = value.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            out.push(*it.next().unwrap_or(&b'\\'));
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// Splits a `lowerdir=` value at unescaped colons, unescaping each element.
/// The layers of a `lowerdir=` value: the regular ones, then the data-only ones (those after
/// a `::`, each separated from the next by `::` too, as the kernel takes them).
pub(super) fn split_lowerdir(value: &[u8]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    if value.is_empty() {
        return Err(OptionsError::new("lowerdir is empty"));
    }
    let empty_element = || {
        OptionsError::new(format_args!(
            "lowerdir {} has an empty element (a leading or trailing \":\")",
            quote(value)
        ))
    };
    let mut regular: Vec<PathBuf> = Vec::new();
    let mut data: Vec<PathBuf> = Vec::new();
    let mut element = Vec::new();
    let mut in_data = false;
    let mut it = value.iter().peekable();
    while let Some(&c) = it.next() {
        match c {
            b'\\' => element.push(*it.next().unwrap_or(&b'\\')),
            b':' => {
                let mut colons = 1;
                while it.next_if_eq(&&b':').is_some() {
                    colons += 1;
                }
                if element.is_empty() || it.peek().is_none() {
                    return Err(empty_element());
                }
                let layers = if in_data { &mut data } else { &mut regular };
                layers.push(path_of(std::mem::take(&mut element)));
                match colons {
                    1 if in_data => {
                        return Err(OptionsError::new(format_args!(
                            "lowerdir {}: a regular lower layer cannot follow a data-only \
                             one (separate data-only layers with \"::\")",
                            quote(value)
                        )));
                    }
                    1 => {}
                    2 => in_data = true,
                    _ => {
                        return Err(OptionsError::new(format_args!(
                            "lowerdir {}: layers are separated by \":\" or, before a \
                             data-only layer, \"::\" (escape a colon in a path as \\:)",
                            quote(value)
                        )));
                    }
                }
            }
            _ => element.push(c),
        }
    }
    if element.is_empty() {
        return Err(empty_element());
    }
    if in_data { &mut data } else { &mut regular }.push(path_of(element));
    check_layer_count(regular.len() + data.len())?;
    Ok((regular, data))
}

pub(super) fn check_layer_count(count: usize) -> Result<()> {
    if count > MAX_LOWER_LAYERS {
        return Err(OptionsError::new(format_args!(
            "too many lower layers in lowerdir: {count} (at most {MAX_LOWER_LAYERS})"
        )));
    }
    Ok(())
}

/// Parses one `-o` argument into `raw`.
pub(super) fn parse_option_list(raw: &mut Raw, list: &[u8]) -> Result<()> {
    let mut after_path = None;
    for field in split_option_list(list) {
        parse_option(raw, field, after_path.as_ref())?;
        after_path = path_in(field).map(|path| (field, path));
    }
    Ok(())
}

/// The path a layer option names (the last one of a `lowerdir=` list), as parsed.
fn path_in(field: &[u8]) -> Option<PathBuf> {
    let i = field.iter().position(|&c| c == b'=')?;
    let value = &field[i + 1..];
    match &field[..i] {
        b"lowerdir" => {
            let (mut regular, mut data) = split_lowerdir(value).ok()?;
            data.pop().or_else(|| regular.pop())
        }
        b"lowerdir+" | b"datadir+" => Some(path_of(value.to_vec())),
        b"upperdir" | b"workdir" => Some(path_of(unescape(value))),
        _ => None,
    }
}

/// The value of an option, required to be UTF-8 (everything but paths).
pub(super) fn text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(value).map_err(|_| {
        OptionsError::new(format_args!(
            "invalid value {} for {name}= (not UTF-8)",
            quote(value)
        ))
    })
}

pub(super) fn bad_value(name: &str, value: &[u8], expected: &str) -> OptionsError {
    OptionsError::new(format_args!(
        "invalid value {} for {name}= (expected {expected})",
        quote(value)
    ))
}

/// A decimal number of ASCII digits only (no sign, no spaces) that fits in a u32.
pub(super) fn parse_u32(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

pub(super) fn parse_bool01(name: &str, value: &[u8]) -> Result<bool> {
    match value {
        b"0" => Ok(false),
        b"1" => Ok(true),
        _ => Err(bad_value(name, value, "0 or 1")),
    }
}

pub(super) fn parse_timeout(value: &[u8]) -> Result<Duration> {
    let bad = || bad_value("timeout", value, "a non-negative number of seconds");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    // Only plain decimal notation: no sign, "inf", "nan" or exponents.
    if text.is_empty()
        || !text.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        || !text.bytes().any(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: f64 = text.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `ContainerID:HostID:Size` triples joined by `:`, optionally with one leading `:`.
pub(super) fn parse_mapping(name: &str, value: &[u8]) -> Result<Vec<IdRange>> {
    let text = text(name, value)?;
    let body = text.strip_prefix(':').unwrap_or(text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<&str> = body.split(':').collect();
    if !fields.len().is_multiple_of(3) {
        return Err(OptionsError::new(format_args!(
            "invalid {name}= {}: expected ContainerID:HostID:Size triples, got {} numbers",
            quote(value),
            fields.len()
        )));
    }
    let mut ranges = Vec::with_capacity(fields.len() / 3);
    for triple in fields.chunks(3) {
        let mut numbers = [0u32; 3];
        for (n, field) in numbers.iter_mut().zip(triple) {
            *n = parse_u32(field).ok_or_else(|| {
                OptionsError::new(format_args!(
                    "invalid {name}= {}: {} is not a number from 0 to {}",
                    quote(value),
                    quote(field.as_bytes()),
                    u32::MAX
                ))
            })?;
        }
        let [container, host, size] = numbers;
        let range = format!("{container}:{host}:{size}");
        if size == 0 {
            return Err(OptionsError::new(format_args!(
                "invalid {name}= {}: range {range} has size 0",
                quote(value)
            )));
        }
        // As the kernel's uid_map: a range may not wrap or include id 4294967295 ((uid_t)-1).
        if container.checked_add(size).is_none() || host.checked_add(size).is_none() {
            return Err(OptionsError::new(format_args!(
                "invalid {name}= {}: range {range} goes past id {}",
                quote(value),
                u32::MAX - 1
            )));
        }
        ranges.push(IdRange {
            container,
            host,
            size,
        });
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_plain_and_empty_fields() {
        assert_eq!(split_option_list(b"a,b=c,d"), vec![&b"a"[..], b"b=c", b"d"]);
        assert_eq!(split_option_list(b",,volatile,"), vec![&b"volatile"[..]]);
        assert_eq!(split_option_list(b"x,work,"), vec![&b"x"[..], b"work"]);
        assert!(split_option_list(b"").is_empty());
        assert!(split_option_list(b",,,").is_empty());
    }

    #[test]
    fn split_quotes_and_escapes() {
        assert_eq!(
            split_option_list(br#"a,context="x,y,z",b"#),
            vec![&b"a"[..], br#"context="x,y,z""#, b"b"]
        );
        assert_eq!(
            split_option_list(br"lowerdir=/a\,b,c"),
            vec![&br"lowerdir=/a\,b"[..], b"c"]
        );
        // An unterminated quote swallows the rest rather than failing.
        assert_eq!(split_option_list(br#"a,"b,c"#), vec![&b"a"[..], br#""b,c"#]);
    }

    #[test]
    fn unescape_removes_backslashes() {
        assert_eq!(unescape(br"/a\:b\,c\\d"), br"/a:b,c\d".to_vec());
        assert_eq!(unescape(br"/a\"), br"/a\".to_vec());
        assert_eq!(unescape(b"/plain"), b"/plain".to_vec());
    }

    #[test]
    fn split_lowerdir_escapes_and_order() {
        let (v, data) = split_lowerdir(br"/top:/mid\:dle:/bottom").unwrap();
        assert_eq!(
            v,
            vec![
                PathBuf::from("/top"),
                PathBuf::from("/mid:dle"),
                PathBuf::from("/bottom")
            ]
        );
        assert!(data.is_empty());
    }

    #[test]
    fn split_lowerdir_data_only() {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        let (v, data) = split_lowerdir(b"/a:/b::/c::/d").unwrap();
        assert_eq!(v, paths(&["/a", "/b"]));
        assert_eq!(data, paths(&["/c", "/d"]));
        let (v, data) = split_lowerdir(br"/a::/c\:d").unwrap();
        assert_eq!((v, data), (paths(&["/a"]), paths(&["/c:d"])));
        for (bad, needle) in [
            (&b"/a::/c:/d"[..], "cannot follow a data-only"),
            (b"/a:::/c", "separated by"),
            (b"/a::::/c", "separated by"),
        ] {
            let e = split_lowerdir(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn split_lowerdir_empty_elements() {
        for bad in [&b":a"[..], b"a:", b":", b"a::", b"::a", b"a:b::"] {
            let e = split_lowerdir(bad).unwrap_err().to_string();
            assert!(e.contains("empty element"), "{e}");
            assert!(e.contains("lowerdir"), "{e}");
        }
        assert!(
            split_lowerdir(b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn split_lowerdir_limit() {
        let list = |n: usize| vec!["/x"; n].join(":");
        assert_eq!(split_lowerdir(list(500).as_bytes()).unwrap().0.len(), 500);
        let e = split_lowerdir(list(501).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("501") && e.contains("500"), "{e}");
        let data = format!("{}::/y", list(500));
        assert!(split_lowerdir(data.as_bytes()).is_err());
    }

    #[test]
    fn mapping_valid() {
        let r = parse_mapping("uidmapping", b"0:1000:1:1:100000:65536").unwrap();
        assert_eq!(
            r,
            vec![
                IdRange {
                    container: 0,
                    host: 1000,
                    size: 1
                },
                IdRange {
                    container: 1,
                    host: 100000,
                    size: 65536
                },
            ]
        );
        assert_eq!(parse_mapping("uidmapping", b":0:1000:1").unwrap().len(), 1);
        assert!(parse_mapping("uidmapping", b"").unwrap().is_empty());
        assert!(parse_mapping("uidmapping", b":").unwrap().is_empty());
        // Boundaries: the last mappable id is u32::MAX - 1, as for the kernel's uid_map.
        assert!(parse_mapping("uidmapping", b"0:0:4294967295").is_ok());
        assert!(parse_mapping("uidmapping", b"4294967294:4294967294:1").is_ok());
    }

    #[test]
    fn mapping_invalid() {
        let cases: &[(&[u8], &str)] = &[
            (b"0:1000", "triples"),
            (b"0:1000:1:2", "triples"),
            (b"0:1000:1:", "triples"),
            (b"::0:1000:1", "triples"),
            (b"a:1000:1", "\"a\""),
            (b"0:-1:1", "\"-1\""),
            (b"0:+1:1", "\"+1\""),
            (b"0: 1:1", "\" 1\""),
            (b"0:4294967296:1", "4294967296"),
            (b"0:1000:0", "size 0"),
            (b"4294967295:0:2", "goes past"),
            (b"0:4294967295:2", "goes past"),
            (b"1:0:4294967295", "goes past"),
            (b"4294967295:0:1", "goes past"),
            (b"0:4294967295:1", "goes past"),
        ];
        for (value, needle) in cases {
            let e = parse_mapping("gidmapping", value).unwrap_err().to_string();
            assert!(e.contains("gidmapping"), "{e}");
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn timeout_values() {
        assert_eq!(parse_timeout(b"1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_timeout(b"0").unwrap(), Duration::ZERO);
        assert_eq!(parse_timeout(b"0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout(b"2.").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout(b".25").unwrap(), Duration::from_millis(250));
        for bad in [
            &b"-1"[..],
            b"",
            b"abc",
            b"inf",
            b"nan",
            b"1e3",
            b"1.2.3",
            b".",
            b"+1",
        ] {
            let e = parse_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("timeout"), "{e}");
        }
    }

    #[test]
    fn u32_strict() {
        assert_eq!(parse_u32("0"), Some(0));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("+1"), None);
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("1 "), None);
    }

    // ---- flags and positionals ----
}
