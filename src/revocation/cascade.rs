//! What a revocation reaches: a revoked access token takes with it every token that
//! was minted from it by token exchange, generation after generation. Pure: the
//! lineage table is read through the `children` callback.

use std::collections::HashMap;

/// What revoking `roots` (jti, exp) reaches: the roots themselves and, transitively,
/// every token minted from one of them by token exchange (`children` lists a jti's
/// direct descendants with their own expiry). Each jti appears once, with the latest
/// expiry seen for it. A cycle or a repeated link (only a corrupted table could hold
/// one) is walked once, so the walk always ends.
pub(crate) fn cascade<E>(
    roots: Vec<(String, i64)>,
    mut children: impl FnMut(&str) -> Result<Vec<(String, i64)>, E>,
) -> Result<Vec<(String, i64)>, E> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(String, i64)> = Vec::new();
    let mut queue: Vec<(String, i64)> = roots;
    let mut next = 0;
    while next < queue.len() {
        let (jti, exp) = queue[next].clone();
        next += 1;
        if let Some(&i) = seen.get(&jti) {
            out[i].1 = out[i].1.max(exp);
            continue;
        }
        seen.insert(jti.clone(), out.len());
        out.push((jti.clone(), exp));
        queue.extend(children(&jti)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(edges: &[(&str, &str, i64)]) -> impl FnMut(&str) -> Result<Vec<(String, i64)>, ()> {
        let edges: Vec<(String, String, i64)> = edges
            .iter()
            .map(|(p, c, e)| (p.to_string(), c.to_string(), *e))
            .collect();
        move |parent: &str| {
            Ok(edges
                .iter()
                .filter(|(p, _, _)| p == parent)
                .map(|(_, c, e)| (c.clone(), *e))
                .collect())
        }
    }

    fn reach(roots: &[(&str, i64)], edges: &[(&str, &str, i64)]) -> Vec<(String, i64)> {
        let roots = roots.iter().map(|(j, e)| (j.to_string(), *e)).collect();
        let mut out = cascade(roots, tree(edges)).unwrap();
        out.sort();
        out
    }

    fn owned(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(j, e)| (j.to_string(), *e)).collect()
    }

    #[test]
    fn a_revocation_without_descendants_is_just_itself() {
        assert_eq!(reach(&[("t", 9)], &[("u", "v", 1)]), owned(&[("t", 9)]));
        assert_eq!(reach(&[], &[("u", "v", 1)]), owned(&[]));
    }

    #[test]
    fn a_revocation_reaches_every_generation_with_its_own_expiry() {
        // An exchange of an exchange, and a sibling branch; an unrelated tree stays.
        let edges = [
            ("root", "child", 80),
            ("child", "grandchild", 70),
            ("root", "sibling", 60),
            ("stranger", "its-child", 50),
        ];
        assert_eq!(
            reach(&[("root", 90)], &edges),
            owned(&[
                ("child", 80),
                ("grandchild", 70),
                ("root", 90),
                ("sibling", 60)
            ])
        );
        // Revoking a middle link leaves its ancestors alone.
        assert_eq!(
            reach(&[("child", 80)], &edges),
            owned(&[("child", 80), ("grandchild", 70)])
        );
    }

    #[test]
    fn a_deep_chain_is_followed_to_the_end() {
        let names: Vec<String> = (0..=10).map(|i| format!("t{i}")).collect();
        let edges: Vec<(&str, &str, i64)> = names
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str(), 5))
            .collect();
        assert_eq!(reach(&[("t0", 5)], &edges).len(), 11);
    }

    #[test]
    fn cycles_and_repeats_terminate_and_keep_the_latest_expiry() {
        let edges = [("a", "b", 5), ("b", "a", 7), ("b", "b", 5), ("a", "c", 3)];
        assert_eq!(
            reach(&[("a", 4), ("a", 6)], &edges),
            owned(&[("a", 7), ("b", 5), ("c", 3)])
        );
    }

    #[test]
    fn a_failing_lookup_fails_the_whole_cascade() {
        let r = cascade(vec![("a".into(), 1)], |_| {
            Err::<Vec<(String, i64)>, _>("io")
        });
        assert_eq!(r, Err("io"));
    }
}
