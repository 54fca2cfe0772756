use super::*;

fn parse(s: &str) -> ServiceRef {
    s.parse()
        .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
}

fn error(s: &str) -> String {
    match s.parse::<ServiceRef>() {
        Ok(r) => panic!("{s} should not parse, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_forms_parse_and_round_trip() {
    let cases = [
        ("svc/default/web", None),
        ("svc/default/web:http", Some(PortRef::Name("http".into()))),
        ("svc/default/web:80", Some(PortRef::Number(80))),
        (
            "svc/kube-system/kube-dns:dns-tcp",
            Some(PortRef::Name("dns-tcp".into())),
        ),
        ("svc/0team/a:65535", Some(PortRef::Number(65535))),
        ("svc/default/web:h2c", Some(PortRef::Name("h2c".into()))),
        (
            "svc/default/web:a123456789abcde",
            Some(PortRef::Name("a123456789abcde".into())),
        ),
    ];
    for (s, port) in cases {
        let r = parse(s);
        assert_eq!(r.port, port, "{s}");
        assert_eq!(r.to_string(), s);
        assert_eq!(parse(&r.to_string()), r);
    }
    let r = parse("svc/shop/web:443");
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "web"));
}

#[test]
fn spellings_normalise() {
    assert_eq!(
        parse(" svc/default/web:080 ").to_string(),
        "svc/default/web:80"
    );
    let longest = "a".repeat(63);
    assert_eq!(parse(&format!("svc/{longest}/{longest}")).name, longest);
}

#[test]
fn every_bad_form_says_what_is_wrong_and_what_is_expected() {
    let cases = [
        ("default/web", "`default/web` does not start with svc/"),
        ("service/default/web", "does not start with svc/"),
        ("SVC/default/web", "does not start with svc/"),
        (
            "svc/web",
            "`svc/web` has 1 part(s) after svc/, not NAMESPACE/NAME",
        ),
        ("svc/a/b/c", "has 3 part(s) after svc/"),
        (
            "svc//web",
            "namespace `` is not a DNS-1123 label (it is empty)",
        ),
        (
            "svc/Default/web",
            "namespace `Default` is not a DNS-1123 label (only lowercase",
        ),
        (
            "svc/-ns/web",
            "(it must start and end with a letter or digit)",
        ),
        ("svc/ns_1/web", "namespace `ns_1`"),
        (
            "svc/default/",
            "Service name `` is not a DNS-1035 label (it is empty)",
        ),
        (
            "svc/default/1web",
            "Service name `1web` is not a DNS-1035 label (it must start with a letter)",
        ),
        (
            "svc/default/web-",
            "(it must start and end with a letter or digit)",
        ),
        ("svc/default/web.app", "Service name `web.app`"),
        ("svc/default/web:0", "port `0` is not 1-65535"),
        ("svc/default/web:65536", "port `65536` is not 1-65535"),
        (
            "svc/default/web:",
            "port name `` is not an IANA service name (it is empty)",
        ),
        (
            "svc/default/web:HTTP",
            "port name `HTTP` is not an IANA service name (only lowercase",
        ),
        (
            "svc/default/web:a123456789abcdef",
            "(longer than 15 characters)",
        ),
        (
            "svc/default/web:-http",
            "('-' may not start or end it, nor be doubled)",
        ),
        (
            "svc/default/web:h--2",
            "('-' may not start or end it, nor be doubled)",
        ),
        ("svc/default/web:1-2", "(it needs at least one letter)"),
        ("svc/default/web:80:81", "port name `80:81`"),
    ];
    for (input, wanted) in cases {
        let message = error(input);
        assert!(
            message.contains(wanted),
            "{input}: got {message:?}, wanted {wanted:?}"
        );
        assert!(
            message.ends_with(EXPECTED),
            "{input}: {message} does not show the expected form"
        );
    }
    let long = "a".repeat(64);
    assert!(error(&format!("svc/{long}/web")).contains("(longer than 63 characters)"));
    assert!(error(&format!("svc/default/{long}")).contains("(longer than 63 characters)"));
}

#[test]
fn expected_form_has_an_example() {
    assert!(error("web").ends_with("e.g. svc/default/web:http or svc/default/web:80"));
}
