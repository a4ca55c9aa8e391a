//! nftables over NETLINK_NETFILTER, without libnftnl: yunhe keeps its
//! tables named `yunhe` (`ip yunhe` for NAT, `bridge yunhe` and `inet
//! yunhe` for security groups) per namespace and replaces them whole in one
//! atomic batch (add each table, delete it, add the wanted ones again with
//! their sets, chains and rules), so a pass never leaves half a ruleset and
//! nothing outside yunhe's tables is touched. The few expressions it needs
//! (meta, payload, bitwise, cmp, immediate, nat, masq, ct, lookup) are
//! built here.

use std::io;
use std::net::Ipv4Addr;

use super::netlink::{Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, Socket};

pub const NETLINK_NETFILTER: i32 = 12;
/// The name of yunhe's table in every namespace.
pub const TABLE: &str = "yunhe";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NLM_F_APPEND: u16 = 0x800;
/// Address families of tables (`nfgenmsg.nfgen_family`).
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_BRIDGE: u8 = 7;
pub const NFPROTO_IPV6: u8 = 10;
/// Every family yunhe may hold a table in (each batch clears all three).
const FAMILIES: [u8; 3] = [NFPROTO_IPV4, NFPROTO_INET, NFPROTO_BRIDGE];

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const NFT_REG_1: u32 = 1;

/// Netfilter hooks.
pub const HOOK_PREROUTING: u32 = 0;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_POSTROUTING: u32 = 4;

/// Meta keys (`NFT_META_*`).
pub const META_MARK: u32 = 3;
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
/// Payload bases (`NFT_PAYLOAD_*_HEADER`).
pub const BASE_LINK: u32 = 0;
pub const BASE_NETWORK: u32 = 1;
pub const BASE_TRANSPORT: u32 = 2;
/// Conntrack state bits (`ct state`), host byte order.
pub const CT_INVALID: u32 = 1;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_RELATED: u32 = 4;

/// Comparison operators (`NFT_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq = 0,
    Neq = 1,
    Lte = 3,
    Gte = 5,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// Back to the calling chain (the next rule there).
    Return,
    Jump(String),
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Loads the output (or input) interface name into register 1.
    IfName {
        output: bool,
    },
    /// Loads the IPv4 source (or destination) address into register 1.
    Addr {
        source: bool,
    },
    /// Masks register 1 to a prefix length.
    Prefix(u8),
    /// Compares register 1 with `data` (its length: a name prefix matches).
    Cmp {
        equal: bool,
        data: Vec<u8>,
    },
    /// Source NAT (or destination NAT) to an address.
    Nat {
        source: bool,
        to: Ipv4Addr,
    },
    Masquerade,
    /// Loads a meta key (`META_*`) into register 1.
    Meta(u32),
    /// Loads constant data into register 1.
    Load(Vec<u8>),
    /// Sets the packet mark from register 1.
    SetMark,
    /// Loads `len` bytes at `offset` of a header (`BASE_*`) into register 1.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Register 1 = (register 1 & mask) ^ xor (both as long as the value).
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Compares register 1 with `data` (`Op`; ordered compares are bytewise,
    /// so big-endian data orders as numbers).
    Compare {
        op: Op,
        data: Vec<u8>,
    },
    /// Loads the conntrack state bits into register 1.
    CtState,
    /// Register 1 is (or with `invert`, is not) in the table's set `set`.
    Lookup {
        set: String,
        id: u32,
        invert: bool,
    },
    Verdict(Verdict),
}

/// Builders of the usual matches: the output interface's name is (or is
/// not) `name` (a prefix unless made by [`ifname_exact`]).
pub fn oifname(name: &[u8], equal: bool) -> Vec<Expr> {
    vec![
        Expr::IfName { output: true },
        Expr::Cmp {
            equal,
            data: name.to_vec(),
        },
    ]
}

/// An exact interface name (NUL-terminated, as the kernel compares).
pub fn ifname_exact(name: &str) -> Vec<u8> {
    let mut d = name.as_bytes().to_vec();
    d.push(0);
    d
}

pub fn ip_in(source: bool, net: Ipv4Addr, len: u8) -> Vec<Expr> {
    let mut v = vec![Expr::Addr { source }];
    if len < 32 {
        v.push(Expr::Prefix(len));
    }
    let m = super::netlink::mask(len);
    v.push(Expr::Cmp {
        equal: true,
        data: (u32::from(net) & m).to_be_bytes().to_vec(),
    });
    v
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hook {
    /// "nat" or "filter".
    pub kind: &'static str,
    pub num: u32,
    pub priority: i32,
    /// The policy: accept (else drop).
    pub accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    /// A base chain's hook; None for a chain reached by `jump`.
    pub hook: Option<Hook>,
    pub rules: Vec<Vec<Expr>>,
}

/// A named set of addresses (exact keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    pub name: String,
    /// Its id within the batch (lookups name it too).
    pub id: u32,
    /// nft's data type (7 ipv4_addr, 8 ipv6_addr) and the key's length.
    pub key_type: u32,
    pub key_len: u32,
    pub elements: Vec<Vec<u8>>,
}

/// One of yunhe's tables (named `yunhe`) in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// `NFPROTO_IPV4`, `NFPROTO_INET` or `NFPROTO_BRIDGE`.
    pub family: u8,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new(family: u8, chains: Vec<Chain>) -> Table {
        Table {
            family,
            sets: Vec::new(),
            chains,
        }
    }
}

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft_msg(family: u8, ty: u16, flags: u16) -> Msg {
    let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | ty, flags);
    m.put(&nfgen(family, 0));
    m
}

fn data(m: &mut Msg, ty: u16, value: &[u8]) {
    m.begin(ty);
    m.attr(NFTA_DATA_VALUE, value);
    m.end();
}

fn be(m: &mut Msg, ty: u16, v: u32) {
    m.attr(ty, &v.to_be_bytes());
}

fn expr(m: &mut Msg, e: &Expr) {
    m.begin(NFTA_LIST_ELEM);
    let name = match e {
        Expr::IfName { .. } => "meta",
        Expr::Addr { .. } => "payload",
        Expr::Prefix(_) => "bitwise",
        Expr::Cmp { .. } => "cmp",
        Expr::Nat { .. } => "nat",
        Expr::Masquerade => "masq",
        Expr::Meta(_) | Expr::SetMark => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Compare { .. } => "cmp",
        Expr::CtState => "ct",
        Expr::Lookup { .. } => "lookup",
        Expr::Verdict(_) | Expr::Load(_) => "immediate",
    };
    if let Expr::Nat { to, .. } = e {
        // The address goes into register 1 first.
        m.attr_str(NFTA_EXPR_NAME, "immediate");
        m.begin(NFTA_EXPR_DATA);
        be(m, 1, NFT_REG_1); // NFTA_IMMEDIATE_DREG
        data(m, 2, &to.octets()); // NFTA_IMMEDIATE_DATA
        m.end();
        m.end();
        m.begin(NFTA_LIST_ELEM);
    }
    m.attr_str(NFTA_EXPR_NAME, name);
    match e {
        Expr::IfName { output } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_META_DREG
            be(m, 2, if *output { 7 } else { 6 }); // NFT_META_OIFNAME / IIFNAME
            m.end();
        }
        Expr::Addr { source } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_PAYLOAD_DREG
            be(m, 2, 1); // NFTA_PAYLOAD_BASE: network header
            be(m, 3, if *source { 12 } else { 16 }); // NFTA_PAYLOAD_OFFSET
            be(m, 4, 4); // NFTA_PAYLOAD_LEN
            m.end();
        }
        Expr::Prefix(len) => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // SREG
            be(m, 2, NFT_REG_1); // DREG
            be(m, 3, 4); // LEN
            data(m, 4, &super::netlink::mask(*len).to_be_bytes()); // MASK
            data(m, 5, &[0; 4]); // XOR
            m.end();
        }
        Expr::Cmp { equal, data: d } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_CMP_SREG
            be(m, 2, if *equal { 0 } else { 1 }); // NFT_CMP_EQ / NEQ
            data(m, 3, d); // NFTA_CMP_DATA
            m.end();
        }
        Expr::Nat { source, .. } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, if *source { 0 } else { 1 }); // NFTA_NAT_TYPE
            be(m, 2, u32::from(NFPROTO_IPV4)); // NFTA_NAT_FAMILY
            be(m, 3, NFT_REG_1); // NFTA_NAT_REG_ADDR_MIN
            m.end();
        }
        Expr::Masquerade => {}
        Expr::Meta(key) => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_META_DREG
            be(m, 2, *key); // NFTA_META_KEY
            m.end();
        }
        Expr::Load(d) => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_IMMEDIATE_DREG
            data(m, 2, d); // NFTA_IMMEDIATE_DATA
            m.end();
        }
        Expr::SetMark => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 2, META_MARK); // NFTA_META_KEY
            be(m, 3, NFT_REG_1); // NFTA_META_SREG
            m.end();
        }
        Expr::Payload { base, offset, len } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1);
            be(m, 2, *base);
            be(m, 3, *offset);
            be(m, 4, *len);
            m.end();
        }
        Expr::Bitwise { mask, xor } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // SREG
            be(m, 2, NFT_REG_1); // DREG
            be(m, 3, mask.len() as u32); // LEN
            data(m, 4, mask);
            data(m, 5, xor);
            m.end();
        }
        Expr::Compare { op, data: d } => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1);
            be(m, 2, *op as u32);
            data(m, 3, d);
            m.end();
        }
        Expr::CtState => {
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_1); // NFTA_CT_DREG
            be(m, 2, 0); // NFTA_CT_KEY: NFT_CT_STATE
            m.end();
        }
        Expr::Lookup { set, id, invert } => {
            m.begin(NFTA_EXPR_DATA);
            m.attr_str(1, set); // NFTA_LOOKUP_SET
            be(m, 2, NFT_REG_1); // NFTA_LOOKUP_SREG
            be(m, 4, *id); // NFTA_LOOKUP_SET_ID
            be(m, 5, u32::from(*invert)); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
            m.end();
        }
        Expr::Verdict(v) => {
            let (code, chain): (i32, Option<&str>) = match v {
                Verdict::Drop => (0, None),
                Verdict::Accept => (1, None),
                Verdict::Jump(c) => (-3, Some(c)),
                Verdict::Return => (-5, None),
            };
            m.begin(NFTA_EXPR_DATA);
            be(m, 1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            m.begin(2); // NFTA_IMMEDIATE_DATA
            m.begin(NFTA_DATA_VERDICT);
            be(m, NFTA_VERDICT_CODE, code as u32);
            if let Some(c) = chain {
                m.attr_str(NFTA_VERDICT_CHAIN, c);
            }
            m.end();
            m.end();
            m.end();
        }
    }
    m.end();
}

fn batch_edge(ty: u16) -> Msg {
    let mut m = Msg::new(ty, NLM_F_REQUEST);
    m.put(&nfgen(0, NFNL_SUBSYS_NFTABLES));
    m
}

/// The batch that makes the namespace's tables `tables` (empty: none):
/// every family's `yunhe` table is removed first, then the wanted ones are
/// made with their sets, chains (all before any rule, so jumps resolve)
/// and rules. The kernel applies the batch whole or not at all.
pub fn batch(tables: &[Table]) -> Vec<Msg> {
    let mut msgs = vec![batch_edge(NFNL_MSG_BATCH_BEGIN)];
    let table_msg = |family: u8, ty: u16, flags: u16| {
        let mut m = nft_msg(family, ty, flags);
        m.attr_str(NFTA_TABLE_NAME, TABLE);
        m
    };
    // Add first so the delete never fails: the pair removes any old table.
    for family in FAMILIES {
        msgs.push(table_msg(
            family,
            NFT_MSG_NEWTABLE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        ));
        msgs.push(table_msg(
            family,
            NFT_MSG_DELTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
        ));
    }
    for t in tables {
        let f = t.family;
        msgs.push(table_msg(
            f,
            NFT_MSG_NEWTABLE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        ));
        for set in &t.sets {
            let mut m = nft_msg(f, NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
            m.attr_str(NFTA_SET_TABLE, TABLE);
            m.attr_str(NFTA_SET_NAME, &set.name);
            be(&mut m, NFTA_SET_FLAGS, 0);
            be(&mut m, NFTA_SET_KEY_TYPE, set.key_type);
            be(&mut m, NFTA_SET_KEY_LEN, set.key_len);
            be(&mut m, NFTA_SET_ID, set.id);
            msgs.push(m);
            if set.elements.is_empty() {
                continue;
            }
            let mut m = nft_msg(
                f,
                NFT_MSG_NEWSETELEM,
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            );
            m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            m.attr_str(NFTA_SET_ELEM_LIST_SET, &set.name);
            be(&mut m, NFTA_SET_ELEM_LIST_SET_ID, set.id);
            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in &set.elements {
                m.begin(NFTA_LIST_ELEM);
                m.begin(NFTA_SET_ELEM_KEY);
                m.attr(NFTA_DATA_VALUE, e);
                m.end();
                m.end();
            }
            m.end();
            msgs.push(m);
        }
        for c in &t.chains {
            let mut m = nft_msg(
                f,
                NFT_MSG_NEWCHAIN,
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            );
            m.attr_str(NFTA_CHAIN_TABLE, TABLE);
            m.attr_str(NFTA_CHAIN_NAME, &c.name);
            if let Some(h) = &c.hook {
                m.begin(NFTA_CHAIN_HOOK);
                be(&mut m, NFTA_HOOK_HOOKNUM, h.num);
                be(&mut m, NFTA_HOOK_PRIORITY, h.priority as u32);
                m.end();
                be(&mut m, NFTA_CHAIN_POLICY, u32::from(h.accept));
                m.attr_str(NFTA_CHAIN_TYPE, h.kind);
            }
            msgs.push(m);
        }
        for c in &t.chains {
            for r in &c.rules {
                let mut m = nft_msg(
                    f,
                    NFT_MSG_NEWRULE,
                    NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
                );
                m.attr_str(NFTA_RULE_TABLE, TABLE);
                m.attr_str(NFTA_RULE_CHAIN, &c.name);
                m.begin(NFTA_RULE_EXPRESSIONS);
                for e in r {
                    expr(&mut m, e);
                }
                m.end();
                msgs.push(m);
            }
        }
    }
    msgs.push(batch_edge(NFNL_MSG_BATCH_END));
    msgs
}

/// Replaces (or removes) yunhe's tables in the socket's namespace.
pub fn apply(sock: &mut Socket, tables: &[Table]) -> io::Result<()> {
    sock.request_batch(batch(tables))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::netlink::{attrs, split};
    use super::*;

    fn snat_table() -> Table {
        let mut rule = oifname(b"yh-g", true);
        rule.extend(ip_in(true, Ipv4Addr::new(10, 0, 0, 0), 24));
        rule.push(Expr::Nat {
            source: true,
            to: Ipv4Addr::new(172, 24, 4, 10),
        });
        Table::new(
            NFPROTO_IPV4,
            vec![Chain {
                name: "postrouting".into(),
                hook: Some(Hook {
                    kind: "nat",
                    num: HOOK_POSTROUTING,
                    priority: 100,
                    accept: true,
                }),
                rules: vec![rule],
            }],
        )
    }

    #[test]
    fn batch_is_framed_and_replaces_the_table() {
        let msgs = batch(&[snat_table()]);
        let types: Vec<u16> = msgs
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let d = m.finish(i as u32);
                u16::from_ne_bytes([d[4], d[5]])
            })
            .collect();
        let nft = |t: u16| (NFNL_SUBSYS_NFTABLES << 8) | t;
        assert_eq!(
            types,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_DELTABLE),
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_DELTABLE),
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_DELTABLE),
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_NEWCHAIN),
                nft(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END,
            ]
        );
        // Without a table: only the add/delete pairs of the three families.
        assert_eq!(batch(&[]).len(), 8);
    }

    #[test]
    fn batch_begin_names_the_subsystem() {
        let d = batch(&[]).remove(0).finish(1);
        assert_eq!(&d[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn rule_expressions_encode_in_order() {
        let msgs = batch(&[snat_table()]);
        let rule = msgs[9].clone().finish(1);
        let r = split(&rule);
        let top = attrs(&r[0].payload[4..]);
        assert_eq!(top[0], (NFTA_RULE_TABLE, &b"yunhe\0"[..]));
        assert_eq!(top[1], (NFTA_RULE_CHAIN, &b"postrouting\0"[..]));
        let names: Vec<String> = attrs(top[2].1)
            .iter()
            .map(|(_, e)| {
                let a = attrs(e);
                String::from_utf8_lossy(a[0].1)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "meta",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "immediate",
                "nat"
            ]
        );
        // The prefix compare holds only "yh-g" (a name prefix).
        let cmp = attrs(attrs(top[2].1)[1].1);
        let cmp_data = attrs(cmp[1].1);
        assert_eq!(cmp_data[2].0, 3);
        assert_eq!(attrs(cmp_data[2].1)[0].1, b"yh-g");
    }

    #[test]
    fn chain_hook_and_policy() {
        let msgs = batch(&[snat_table()]);
        let chain = msgs[8].clone().finish(1);
        let r = split(&chain);
        let a = attrs(&r[0].payload[4..]);
        let hook = attrs(a.iter().find(|(t, _)| *t == NFTA_CHAIN_HOOK).unwrap().1);
        assert_eq!(hook[0].1, &HOOK_POSTROUTING.to_be_bytes());
        assert_eq!(hook[1].1, &100u32.to_be_bytes());
        let kind = a.iter().find(|(t, _)| *t == NFTA_CHAIN_TYPE).unwrap().1;
        assert_eq!(kind, b"nat\0");
    }
}
