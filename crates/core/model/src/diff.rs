//! Which entries of two ordered maps differ: how the model finds what a change touched, and how the
//! ADS server finds which resources of a shared set moved.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Keys of two maps whose entries differ (added, removed, or not `same`), by one merge walk.
pub fn changed_keys_by<K: Ord + Clone, V>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> Vec<K> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((k, _)), None) => {
                out.push((*k).clone());
                a.next();
            }
            (None, Some((k, _))) => {
                out.push((*k).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                Ordering::Less => {
                    out.push((*ka).clone());
                    a.next();
                }
                Ordering::Greater => {
                    out.push((*kb).clone());
                    b.next();
                }
                Ordering::Equal => {
                    if !same(va, vb) {
                        out.push((*ka).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// Keys of two maps whose entries differ (added, removed or edited).
pub fn changed_keys<K: Ord + Clone, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<K> {
    changed_keys_by(old, new, PartialEq::eq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_added_removed_and_edited_keys_in_order() {
        let old = BTreeMap::from([(1, "a"), (2, "b"), (4, "d"), (5, "e")]);
        let new = BTreeMap::from([(0, "z"), (2, "b"), (4, "D"), (6, "f")]);
        assert_eq!(changed_keys(&old, &new), vec![0, 1, 4, 5, 6]);
        assert_eq!(changed_keys(&new, &old), vec![0, 1, 4, 5, 6]);
        assert_eq!(changed_keys_by(&old, &new, |_, _| true), vec![0, 1, 5, 6]);
        assert!(changed_keys(&old, &old).is_empty());
    }
}
