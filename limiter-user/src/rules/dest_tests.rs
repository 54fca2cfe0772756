use super::*;

fn parse(s: &str) -> Dest {
    s.parse()
        .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
}

fn error(s: &str) -> String {
    match s.parse::<Dest>() {
        Ok(d) => panic!("{s} should not parse, got {d}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn normalised_forms_round_trip() {
    for s in [
        "10.0.0.2:8080",
        "[fd00::2]:8080",
        "10.0.0.0/24:8080",
        "[fd00::/64]:8080",
        "0.0.0.0/0:443",
        "[::/0]:443",
        "255.255.255.255:65535",
        "10.0.0.0/31:1",
    ] {
        assert_eq!(parse(s).to_string(), s);
    }
}

#[test]
fn spellings_normalise() {
    let cases = [
        (" 10.0.0.2:8080 ", "10.0.0.2:8080"),
        ("[::ffff:10.0.0.1]:80", "10.0.0.1:80"),
        ("[::ffff:10.0.0.0/120]:80", "10.0.0.0/24:80"),
        ("[::ffff:0.0.0.0/96]:80", "0.0.0.0/0:80"),
        ("10.0.0.1/32:80", "10.0.0.1:80"),
        ("[fd00::1/128]:80", "[fd00::1]:80"),
        ("[FD00:0::2]:080", "[fd00::2]:80"),
    ];
    for (given, want) in cases {
        assert_eq!(parse(given).to_string(), want, "{given}");
    }
    assert_eq!(parse("[::ffff:10.0.0.1]:80"), parse("10.0.0.1:80"));
}

#[test]
fn every_error_names_the_problem() {
    let cases = [
        (
            "",
            "empty destination; expected ADDRESS:PORT such as 10.0.0.2:8080 or [fd00::2]:8080",
        ),
        ("10.0.0.1:99999", "port 99999 is out of range 1-65535"),
        (
            "10.0.0.1:4294967296",
            "port 4294967296 is out of range 1-65535",
        ),
        (
            "10.0.0.1:0",
            "port 0 is not a destination port; use a port in 1-65535",
        ),
        (
            "10.0.0.1:http",
            "`http` is not a port number; expected 1-65535",
        ),
        ("10.0.0.1:-1", "`-1` is not a port number; expected 1-65535"),
        (
            "10.0.0.1",
            "10.0.0.1 has no port; expected ADDRESS:PORT such as 10.0.0.1:8080",
        ),
        (
            "10.0.0.1:",
            "10.0.0.1: has no port; expected ADDRESS:PORT such as 10.0.0.1:8080",
        ),
        (
            "[::1]",
            "[::1] has no port; expected ADDRESS:PORT such as [::1]:8080",
        ),
        (
            "[::1]:",
            "[::1]: has no port; expected ADDRESS:PORT such as [::1]:8080",
        ),
        (
            "10.0.0.0/24",
            "10.0.0.0/24 has no port; expected ADDRESS:PORT such as 10.0.0.0/24:8080",
        ),
        (
            "fd00::/64:80",
            "IPv6 destinations need brackets: [fd00::/64]:80",
        ),
        (
            "fd00::2:99999",
            "IPv6 destinations need brackets: [fd00::2]:99999",
        ),
        (
            "10.0.0.1/24:80",
            "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
        ),
        (
            "[fd00::1/64]:80",
            "fd00::1/64 has host bits set; did you mean fd00::/64?",
        ),
        (
            "10.0.0.0/33:80",
            "/33 is not a prefix length of IPv4 (0-32)",
        ),
        (
            "[fd00::/129]:80",
            "/129 is not a prefix length of IPv6 (0-128)",
        ),
        ("10.0.0.0/x:80", "/x is not a prefix length of IPv4 (0-32)"),
        (
            "[fe80::1%eth0]:80",
            "[fe80::1%eth0]:80: IPv6 scope ids (%zone) are not supported in destinations",
        ),
    ];
    for (given, want) in cases {
        assert_eq!(error(given), want, "{given:?}");
    }
    let not_an_address = |what: &str| {
        format!(
            "`{what}` is not an IP address or CIDR (host names are not resolved); expected \
             ADDRESS:PORT such as 10.0.0.2:8080, [fd00::2]:8080 or 10.0.0.0/24:8080"
        )
    };
    assert_eq!(error("foo"), not_an_address("foo"));
    assert_eq!(error("foo:80"), not_an_address("foo"));
    assert_eq!(error(":80"), not_an_address(":80"));
    assert_eq!(error("[::1"), not_an_address("[::1"));
    assert_eq!(error("[::1]x80"), not_an_address("[::1]x80"));
    assert_eq!(error("[10.0.0.1.5]:80"), not_an_address("10.0.0.1.5"));
}

#[test]
fn lpm_keys_follow_the_layout() {
    let (bits, key) = parse("10.0.0.2:8080").lpm_key().unwrap();
    assert_eq!(bits, EXACT_PREFIX_BITS);
    assert_eq!(key, DestAddr::v4(0x0a00_0002, 8080));

    let (bits, key) = parse("10.1.2.0/24:80").lpm_key().unwrap();
    assert_eq!(bits, V4_MAPPED_PREFIX_BITS + 24);
    assert_eq!(key, DestAddr::v4(0x0a01_0200, 80));

    let (bits, key) = parse("[fd00::/64]:443").lpm_key().unwrap();
    assert_eq!(bits, PORT_BITS + 64);
    let mut want = [0u8; 16];
    want[0] = 0xfd;
    assert_eq!(key, DestAddr::v6(want, 443));

    let (bits, key) = parse("[fd00::2]:443").lpm_key().unwrap();
    assert_eq!(bits, EXACT_PREFIX_BITS);
    want[15] = 2;
    assert_eq!(key, DestAddr::v6(want, 443));

    // A hand-built (not normalised) destination still yields the canonical key.
    let mapped = Dest::Addr("[::ffff:10.0.0.2]:8080".parse().unwrap());
    assert_eq!(mapped.lpm_key(), parse("10.0.0.2:8080").lpm_key());
    assert_eq!(parse("svc/default/web:http").lpm_key(), None);
}

#[test]
fn lpm_keys_round_trip() {
    for s in [
        "10.0.0.2:8080",
        "[fd00::2]:8080",
        "10.0.0.0/24:8080",
        "[fd00::/64]:8080",
        "0.0.0.0/0:1",
        "[::/0]:65535",
        "10.0.0.0/31:9",
        "[fd00::/127]:9",
        "[::/96]:9",
    ] {
        let dest = parse(s);
        let (bits, key) = dest.lpm_key().unwrap();
        assert_eq!(Dest::from_lpm_key(bits, &key), dest, "{s}");
    }
}

#[test]
fn from_lpm_key_ignores_bits_past_the_prefix() {
    let key = DestAddr::v4(0x0a00_00ff, 80);
    assert_eq!(
        Dest::from_lpm_key(V4_MAPPED_PREFIX_BITS + 24, &key).to_string(),
        "10.0.0.0/24:80"
    );
}

#[test]
fn serde_uses_the_normalised_string() {
    let d: Dest = serde_json::from_str("\"[::ffff:10.0.0.1]:80\"").unwrap();
    assert_eq!(serde_json::to_string(&d).unwrap(), "\"10.0.0.1:80\"");
    let e = serde_json::from_str::<Dest>("\"10.0.0.1:99999\"").unwrap_err();
    assert!(
        e.to_string().contains("port 99999 is out of range 1-65535"),
        "{e}"
    );
}

#[test]
fn ordering_is_total_and_stable() {
    let mut v = [
        parse("10.0.0.2:80"),
        parse("10.0.0.1:80"),
        parse("10.0.0.0/24:80"),
    ];
    v.sort();
    let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.0/24:80"]);
}

#[test]
fn service_destinations_parse_and_print_canonically() {
    let d = parse("svc/default/web:080");
    assert_eq!(d.to_string(), "svc/default/web:80");
    assert_eq!(d.service().unwrap().name, "web");
    let e = "svc/Default/web".parse::<Dest>().unwrap_err().to_string();
    assert!(e.contains("svc/"), "{e}");
}

#[test]
fn an_address_destination_stays_small() {
    // The daemon keeps a Dest and a RuleSpec per rule in two maps, for 100k rules: a Service
    // destination's strings, the adaptive settings and the breaker are boxed so they cost a
    // pointer each here.
    assert!(
        std::mem::size_of::<Dest>() <= 32,
        "{}",
        std::mem::size_of::<Dest>()
    );
    let rule = std::mem::size_of::<crate::rules::spec::RuleSpec>();
    assert!(rule <= 88, "{rule}");
}
