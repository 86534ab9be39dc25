//! One-time join tokens (issue 3): a used, an expired and an altered token are each refused
//! with a message saying which, and a refusal changes neither the membership nor the trust
//! list.

use std::time::{SystemTime, UNIX_EPOCH};

use fepha::admin::token::JoinToken;
use fepha_cluster_tests::{CertList, Cluster, site_config};

/// `token` with the character at byte `at` replaced by another one of the same alphabet.
fn change_one_character(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(bytes).expect("still ASCII");
    assert_ne!(changed, token);
    changed
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
}

/// The trust list and membership, as every one of `among` shows them once they agree.
fn trust_and_members(c: &Cluster, among: &[usize]) -> (CertList, Vec<String>) {
    let voters: Vec<usize> = among.to_vec();
    let statuses = c.wait_for_members(among, &voters);
    let list = c.wait_until("every node shows the same trust list", || {
        let lists: Vec<CertList> = among
            .iter()
            .map(|&i| c.cert_list(i))
            .collect::<Result<_, _>>()?;
        if lists.iter().any(|l| *l != lists[0]) {
            return Err(format!("the lists differ: {lists:#?}"));
        }
        Ok(lists[0].clone())
    });
    (list, statuses[0].member_names())
}

#[test]
fn used_expired_and_altered_tokens_are_refused_and_change_nothing() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter"]);
    let follower = 1 - leader;

    // Made first, so that it expires while the other cases run.
    let short = c.cli_ok(leader, &["token", "create", "--ttl", "1s"]);
    let short = short.trim().to_owned();
    let expires_at_ms = JoinToken::decode(&short)
        .unwrap_or_else(|e| panic!("`token create` printed {short:?}: {e}"))
        .expires_at_ms;

    // A token that lets a third node in; it is then used.
    let used = c.cli_ok(follower, &["token", "create"]);
    let used = used.trim().to_owned();
    assert!(used.starts_with("fepha1."), "{used}");
    let third = c.add_node("voter");
    c.start(&[third]);
    c.cli_ok(third, &["join", "--token", &used]);
    let members = [0, 1, third];
    let (before, names) = trust_and_members(&c, &members);
    assert_eq!(before.trusted.len(), 3, "{before:#?}");
    assert!(before.pending.is_empty(), "{before:#?}");

    let fourth = c.add_node("voter");
    c.start(&[fourth]);
    let refused = |token: &str, why: &str| {
        let out = c.cli(fourth, &["join", "--token", token]);
        assert!(
            !out.success(),
            "{} joined with a token that should be refused ({why}): {out:?}",
            c.name(fourth)
        );
        assert!(
            out.stderr.contains(why),
            "the refusal should say {why:?}: {out:?}"
        );
        out
    };

    // Used.
    refused(&used, "this token has already been used");

    // Altered: one character of the body, or of the checksum, of a token that is still good.
    let fresh = c.cli_ok(leader, &["token", "create"]);
    let fresh = fresh.trim().to_owned();
    let body = fresh.find('.').expect("fepha1.") + 1;
    let sum = fresh.rfind('.').expect("a checksum") + 1;
    for at in [body + (sum - body) / 2, sum + 3] {
        refused(
            &change_one_character(&fresh, at),
            "this join token is damaged or was altered (its checksum does not match)",
        );
    }

    // Expired: the leader judges by its clock, which is this machine's.
    c.wait_until("the short token's life is over", || {
        if now_ms() > expires_at_ms + 100 {
            Ok(())
        } else {
            Err(format!("{} ms to go", expires_at_ms + 100 - now_ms()))
        }
    });
    refused(&short, "this token has expired");

    // None of it let anyone in or changed anything.
    let (after, names_after) = trust_and_members(&c, &members);
    assert_eq!(after, before, "a refused token changed the trust list");
    assert_eq!(names_after, names, "a refused token changed the membership");
    let s = c.status_ids(fourth).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(s.state, "uninitialised", "{s:?}");

    // The refusals did not spend the good token, nor spoil the refused node.
    c.cli_ok(fourth, &["join", "--token", &fresh]);
    let everyone = [0, 1, third, fourth];
    let (list, _) = trust_and_members(&c, &everyone);
    assert_eq!(list.trusted.len(), 4, "{list:#?}");
    let applied = c.apply_ok(fourth, &site_config("after-tokens", 1));
    let statuses = c.wait_converged(&everyone);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}
