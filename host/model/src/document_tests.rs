use super::*;

#[test]
fn yaml_streams_json_and_lists_parse() {
    let yaml = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
---
";
    let docs = parse("file", yaml).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].key.to_string(), "Namespace x");
    assert_eq!(docs[1].key.to_string(), "NetworkPolicy x/deny-all");
    let v: Value = serde_json::from_str(&docs[1].body).unwrap();
    assert_eq!(v["spec"]["podSelector"], serde_json::json!({}));

    let json = r#"{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"y"}},
        {"kind":"NetworkPolicy","metadata":{"name":"p","namespace":"y"}}]}"#;
    let docs = parse("file", json).unwrap();
    assert_eq!(docs.iter().map(|d| d.key.to_string()).collect::<Vec<_>>(), ["Namespace y", "NetworkPolicy y/p"]);
}

#[test]
fn bad_documents_name_the_field_and_rule() {
    let cases = [
        ("", "holds no documents"),
        ("kind: [", "not valid YAML"),
        ("- a\n- b", "not an object"),
        ("metadata: {name: a}", "has no `kind`"),
        ("kind: Network-Policy\nmetadata: {name: a}", "letters and digits"),
        ("kind: NetworkPolicy", "has no `metadata`"),
        ("kind: NetworkPolicy\nmetadata: {name: Bad_Name}", "metadata.name \"Bad_Name\""),
        ("kind: NetworkPolicy\nmetadata: {name: a, namespace: 7}", "must be a string"),
        ("kind: List\nmetadata: {name: a}", "`items` array"),
        ("kind: A\nmetadata: {name: a}\n---\nkind: A\nmetadata: {name: a}", "appears twice"),
    ];
    for (text, want) in cases {
        let e = parse("file", text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.starts_with("file"), "{e}");
    }
}

#[test]
fn keys_are_distinct_per_tenant() {
    let k = DocKey { kind: "NetworkPolicy".into(), namespace: "x".into(), name: "a".into() };
    assert_ne!(store_key("t1", &k), store_key("t2", &k));
    assert_ne!(store_key("t", &k), store_key("t", &DocKey { namespace: "".into(), ..k.clone() }));
}

#[test]
fn nesting_is_refused_before_the_parser_and_quotes_hide_only_what_they_quote() {
    let t = std::time::Instant::now();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = parse("documents", &deep).unwrap_err().to_string();
    assert!(e.contains("nests [ and { 100000 deep; at most 64"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "linear: {:?}", t.elapsed());
    assert_eq!(flow_depth("a: {b: [1, 2, {c: d}]}"), 3);
    assert_eq!(flow_depth("a: \"[[[[\"\nb: '[[{{'\nc: 'it''s [['\n"), 0, "quoted brackets are text");
    assert_eq!(flow_depth("a: x # [[[[\n"), 0, "a comment");
    // Where the parser sees no quote, neither does the count.
    assert_eq!(flow_depth("[a- '[[[[["), 6);
    assert_eq!(flow_depth("[x '[[["), 4);
    assert_eq!(flow_depth("a: it's [[[\n[[x]]"), 5, "a plain scalar's apostrophe quotes nothing");
    assert_eq!(flow_depth("[a#[[["), 4, "# without space is no comment");
}
