//! Work on shared `ResourceSet`s, done once per set rather than once per proxy: which names differ
//! between an old and a new set (delta), and an order-independent digest of a set's resources per type
//! (SotW versions). Every proxy whose config moves from the same old set to the same new one shares the
//! result, so a change costs O(changed resources) per proxy instead of O(all resources).
//!
//! The memos are keyed by set pointers; each entry holds the sets it was computed from (weakly for the
//! diffs), so a pointer cannot be reused by another set while its entry exists. Entries whose sets
//! nobody else holds any more are swept out as the memo grows.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use bytes::{Bytes, BytesMut};

use osm_xds::{PerType, Resource, ResourceSet, TypeKind};

/// Pointer identity of a set (only compared while an `Arc` to it is held).
fn key(set: &Arc<ResourceSet>) -> usize {
    Arc::as_ptr(set) as usize
}

/// A map that forgets entries whose sets are no longer used outside it, once it has doubled in size
/// since the last sweep (so sweeping is amortised O(1) per insert and dead entries stay bounded by
/// the live ones).
struct Memo<K, V> {
    entries: HashMap<K, V>,
    sweep_at: usize,
}

impl<K: Eq + Hash, V> Memo<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    fn insert(&mut self, k: K, v: V, live: impl Fn(&V) -> bool) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, v| live(v));
            self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
        }
        self.entries.insert(k, v);
    }
}

const MIN_SWEEP: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The memos are caches: a panic elsewhere cannot leave an entry half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by the memo only: nobody can ask for this entry again.
fn in_use(set: &Arc<ResourceSet>) -> bool {
    Arc::strong_count(set) > 1
}

/// Holds its sets weakly: that keeps their allocations (so the pointer keys stay unique) without keeping
/// the sets. Holding them strongly chained every transition to the next — (S0→S1) kept S0 while S1 was
/// live, and (S1→S2) kept S1 — so no old set was ever freed: +180 % RSS over a 5-minute churn soak.
struct DiffEntry {
    old: Weak<ResourceSet>,
    new: Weak<ResourceSet>,
    names: Changed,
}

/// The names that differ between two sets, per type.
pub(crate) type Changed = Arc<PerType<Box<[String]>>>;

static DIFFS: LazyLock<Mutex<Memo<(usize, usize), DiffEntry>>> = LazyLock::new(|| Mutex::new(Memo::new()));

/// `ResourceSet::changed_names` of every type, memoised per (old set, new set): every proxy making the
/// same transition shares it.
pub(crate) fn changed_names(old: &Arc<ResourceSet>, new: &Arc<ResourceSet>) -> Changed {
    let k = (key(old), key(new));
    let mut memo = lock(&DIFFS);
    if let Some(e) = memo.entries.get(&k) {
        return e.names.clone();
    }
    let mut names = PerType::<Box<[String]>>::default();
    for kind in TypeKind::ALL {
        names[kind] = old.changed_names(new, kind).into();
    }
    let names = Arc::new(names);
    memo.insert(
        k,
        DiffEntry {
            old: Arc::downgrade(old),
            new: Arc::downgrade(new),
            names: names.clone(),
        },
        |e| e.old.strong_count() > 0 && e.new.strong_count() > 0,
    );
    names
}

/// The set transitions one stream looked up during a turn. Every type of a proxy makes the same
/// transitions, so the shared memo (and its lock, which both cores' streams take) is visited once per
/// differing set and turn rather than once per type. Keys are pointers: only valid while the caller
/// holds both configs, i.e. within the turn.
#[derive(Default)]
pub(crate) struct Transitions(Vec<(usize, usize, Changed)>);

impl Transitions {
    fn get(&mut self, old: &Arc<ResourceSet>, new: &Arc<ResourceSet>) -> &Changed {
        let (a, b) = (key(old), key(new));
        match self.0.iter().position(|(x, y, _)| (*x, *y) == (a, b)) {
            Some(i) => &self.0[i].2,
            None => {
                self.0.push((a, b, changed_names(old, new)));
                &self.0.last().expect("just pushed").2
            }
        }
    }
}

/// The names of `kind` that may differ between two configs' sets: those of sets that differ at the
/// same position (memoised per set pair), and every name of a set only one config has at that
/// position. Names elsewhere are in identical sets, so their resources are the same `Arc`s. Relies on
/// names being unique across a config's sets.
pub(crate) fn candidates(
    old: &[Arc<ResourceSet>],
    new: &[Arc<ResourceSet>],
    kind: TypeKind,
    seen: &mut Transitions,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            (Some(a), Some(b)) => out.extend(seen.get(a, b)[kind].iter().cloned()),
            (Some(s), None) | (None, Some(s)) => out.extend(s.of_kind(kind).keys().cloned()),
            (None, None) => unreachable!("i is below one of the lengths"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// An order-independent digest of resources: the wrapping sum of a hash of each name and version,
/// and their count. Sums of disjoint groups add up, so a config's digest is the sum of its sets'.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Digest {
    sum: u64,
    count: usize,
}

impl Digest {
    pub(crate) fn add(&mut self, r: &Resource) {
        let mut h = std::hash::DefaultHasher::new();
        r.name.hash(&mut h);
        r.version.hash(&mut h);
        self.sum = self.sum.wrapping_add(h.finish());
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, other: Digest) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.count += other.count;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The SotW `version_info` of exactly these resources.
    pub(crate) fn version(&self) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.sum.hash(&mut h);
        self.count.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

struct DigestEntry {
    set: Arc<ResourceSet>,
    per_kind: [Digest; 5],
}

static DIGESTS: LazyLock<Mutex<Memo<usize, DigestEntry>>> = LazyLock::new(|| Mutex::new(Memo::new()));

/// The digest of every resource of `kind` in `set`, computed once per set (for all kinds at once).
pub(crate) fn set_digest(set: &Arc<ResourceSet>, kind: TypeKind) -> Digest {
    let index = TypeKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("ALL holds every kind");
    let mut memo = lock(&DIGESTS);
    if let Some(e) = memo.entries.get(&key(set)) {
        return e.per_kind[index];
    }
    let per_kind = TypeKind::ALL.map(|k| {
        let mut d = Digest::default();
        for r in set.of_kind(k).values() {
            d.add(r);
        }
        d
    });
    memo.insert(
        key(set),
        DigestEntry {
            set: set.clone(),
            per_kind,
        },
        |e| in_use(&e.set),
    );
    per_kind[index]
}

/// How resources are framed in a block: as `DiscoveryResponse.resources` entries (`Any`) or as
/// `DeltaDiscoveryResponse.resources` entries (`Resource` wrapping the `Any`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Framing {
    Sotw,
    Delta,
}

struct BlockEntry {
    set: Arc<ResourceSet>,
    bytes: Bytes,
}

type BlockKey = (usize, TypeKind, Framing);

static BLOCKS: LazyLock<Mutex<Memo<BlockKey, BlockEntry>>> = LazyLock::new(|| Mutex::new(Memo::new()));

/// Every resource of `kind` in `set`, framed by `frame` and concatenated: built once per set and
/// framing, then sent by reference to every proxy that is sent the whole set.
pub(crate) fn set_block(
    set: &Arc<ResourceSet>,
    kind: TypeKind,
    framing: Framing,
    frame: impl Fn(&Resource, &mut BytesMut),
) -> Bytes {
    let k = (key(set), kind, framing);
    let mut memo = lock(&BLOCKS);
    if let Some(e) = memo.entries.get(&k) {
        return e.bytes.clone();
    }
    let mut buf = BytesMut::new();
    for r in set.of_kind(kind).values() {
        frame(r, &mut buf);
    }
    let bytes = buf.freeze();
    memo.insert(
        k,
        BlockEntry {
            set: set.clone(),
            bytes: bytes.clone(),
        },
        |e| in_use(&e.set),
    );
    bytes
}

/// A proxy's subscribed names of one type. Thousands of proxies subscribe to the same names (every
/// permissive proxy to the same thousand EDS names), so equal sets are shared: see [`intern_names`].
pub(crate) type Names = Arc<BTreeSet<String>>;

struct NameSets {
    by_hash: HashMap<u64, Vec<Weak<BTreeSet<String>>>>,
    sweep_at: usize,
}

static NAME_SETS: LazyLock<Mutex<NameSets>> = LazyLock::new(|| {
    Mutex::new(NameSets {
        by_hash: HashMap::new(),
        sweep_at: MIN_SWEEP,
    })
});

/// The shared copy of `names`: an equal set some other stream holds, or `names` itself, remembered
/// (weakly) for the next stream that subscribes to the same names. At 2000 proxies × 1000 EDS names
/// the per-stream copies were a third of the controller's memory.
pub(crate) fn intern_names(names: BTreeSet<String>) -> Names {
    let mut h = std::hash::DefaultHasher::new();
    names.hash(&mut h);
    let hash = h.finish();
    let mut interned = lock(&NAME_SETS);
    if let Some(found) = interned
        .by_hash
        .get(&hash)
        .and_then(|candidates| candidates.iter().filter_map(Weak::upgrade).find(|c| **c == names))
    {
        return found;
    }
    if interned.by_hash.len() >= interned.sweep_at {
        interned.by_hash.retain(|_, candidates| {
            candidates.retain(|c| c.strong_count() > 0);
            !candidates.is_empty()
        });
        interned.sweep_at = (interned.by_hash.len() * 2).max(MIN_SWEEP);
    }
    let names = Arc::new(names);
    interned
        .by_hash
        .entry(hash)
        .or_default()
        .push(Arc::downgrade(&names));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str, tag: &str) -> Arc<Resource> {
        let msg = Cluster {
            name: name.to_string(),
            alt_stat_name: tag.to_string(),
            ..Default::default()
        };
        Resource::encode(TypeKind::Cluster, name, &msg)
    }

    fn set(resources: &[Arc<Resource>]) -> Arc<ResourceSet> {
        let mut s = ResourceSet::default();
        for r in resources {
            s.insert(r.clone());
        }
        Arc::new(s)
    }

    /// Added, removed and re-versioned names differ; a re-encoded resource with equal bytes does not.
    #[test]
    fn changed_names_of_two_sets() {
        let old = set(&[cluster("a", "1"), cluster("b", "1"), cluster("c", "1")]);
        let new = set(&[cluster("a", "1"), cluster("b", "2"), cluster("d", "1")]);
        assert_eq!(&*changed_names(&old, &new)[TypeKind::Cluster], ["b", "c", "d"]);
        assert!(changed_names(&old, &new)[TypeKind::Endpoint].is_empty());
        // Memoised: the same answer, the same allocation.
        assert!(Arc::ptr_eq(
            &changed_names(&old, &new),
            &changed_names(&old, &new)
        ));
    }

    /// Only sets that differ contribute candidates; sets only one side has contribute all names.
    #[test]
    fn candidates_skip_shared_sets() {
        let shared = set(&[cluster("s", "1")]);
        let old = vec![
            shared.clone(),
            set(&[cluster("a", "1")]),
            set(&[cluster("x", "1")]),
        ];
        let new = vec![shared, set(&[cluster("a", "2")])];
        let mut seen = Transitions::default();
        assert_eq!(candidates(&old, &new, TypeKind::Cluster, &mut seen), ["a", "x"]);
        assert_eq!(seen.0.len(), 1, "one differing pair looked up");
        assert_eq!(
            candidates(&old, &new, TypeKind::Endpoint, &mut seen),
            Vec::<String>::new()
        );
        assert_eq!(seen.0.len(), 1, "the other type reuses it");
    }

    /// A config's digest does not depend on how its resources are split into sets.
    #[test]
    fn digest_adds_up_over_sets() {
        let one = set(&[cluster("a", "1"), cluster("b", "1")]);
        let (a, b) = (set(&[cluster("a", "1")]), set(&[cluster("b", "1")]));
        let mut split = set_digest(&a, TypeKind::Cluster);
        split.merge(set_digest(&b, TypeKind::Cluster));
        assert_eq!(set_digest(&one, TypeKind::Cluster), split);
        assert_ne!(
            set_digest(&one, TypeKind::Cluster).version(),
            set_digest(&a, TypeKind::Cluster).version()
        );
    }

    /// Dead entries are swept once the memo has grown enough.
    #[test]
    fn equal_name_sets_are_shared() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        let a = intern_names(names(&["x", "y"]));
        let b = intern_names(names(&["y", "x"]));
        let c = intern_names(names(&["x"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        // Once nobody holds it, an equal set is a new allocation.
        drop((a, b));
        let d = intern_names(names(&["x", "y"]));
        assert_eq!(*d, names(&["x", "y"]));
    }

    /// A config moving through many sets: the diff memo must not keep the old ones alive.
    #[test]
    fn diffs_do_not_keep_old_sets_alive() {
        let mut current = set(&[cluster("a", "0")]);
        let first = Arc::downgrade(&current);
        for i in 1..10 {
            let next = set(&[cluster("a", &i.to_string())]);
            assert_eq!(
                &*changed_names(&current, &next)[TypeKind::Cluster],
                ["a".to_string()]
            );
            current = next;
        }
        assert_eq!(
            first.strong_count(),
            0,
            "the first set is freed once nobody uses it"
        );
    }

    #[test]
    fn memo_sweeps_entries_nobody_uses() {
        let mut memo: Memo<usize, Arc<ResourceSet>> = Memo::new();
        let kept = set(&[]);
        memo.insert(0, kept.clone(), in_use);
        for i in 1..=MIN_SWEEP {
            memo.insert(i, set(&[]), in_use);
        }
        assert_eq!(memo.entries.len(), 2, "the live entry and the one just inserted");
    }
}
