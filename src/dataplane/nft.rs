//! nftables over NETLINK_NETFILTER, without libnftnl: yunhe keeps one
//! table, `ip yunhe`, per namespace and replaces it whole in one atomic
//! batch (add table, delete it, add it again with its chains and rules), so
//! a pass never leaves half a ruleset and nothing outside the table is
//! touched. The few expressions it needs (meta, payload, bitwise, cmp,
//! immediate, nat, masq, ct) are built here.

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
const NLM_F_APPEND: u16 = 0x800;
const NFPROTO_IPV4: u8 = 2;

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
pub const HOOK_POSTROUTING: u32 = 4;

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    /// "nat" or "filter".
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
    pub accept: bool,
    pub rules: Vec<Vec<Expr>>,
}

/// yunhe's table of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Table {
    pub chains: Vec<Chain>,
}

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft_msg(ty: u16, flags: u16) -> Msg {
    let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | ty, flags);
    m.put(&nfgen(NFPROTO_IPV4, 0));
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
    }
    m.end();
}

fn batch_edge(ty: u16) -> Msg {
    let mut m = Msg::new(ty, NLM_F_REQUEST);
    m.put(&nfgen(0, NFNL_SUBSYS_NFTABLES));
    m
}

/// The batch that makes the namespace's table `table` (None: no table).
pub fn batch(table: Option<&Table>) -> Vec<Msg> {
    let mut msgs = vec![batch_edge(NFNL_MSG_BATCH_BEGIN)];
    let table_msg = |ty: u16, flags: u16| {
        let mut m = nft_msg(ty, flags);
        m.attr_str(NFTA_TABLE_NAME, TABLE);
        m
    };
    // Add first so the delete never fails: the pair removes any old table.
    msgs.push(table_msg(
        NFT_MSG_NEWTABLE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
    ));
    msgs.push(table_msg(NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK));
    if let Some(t) = table {
        msgs.push(table_msg(
            NFT_MSG_NEWTABLE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        ));
        for c in &t.chains {
            let mut m = nft_msg(NFT_MSG_NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
            m.attr_str(NFTA_CHAIN_TABLE, TABLE);
            m.attr_str(NFTA_CHAIN_NAME, &c.name);
            m.begin(NFTA_CHAIN_HOOK);
            be(&mut m, NFTA_HOOK_HOOKNUM, c.hook);
            be(&mut m, NFTA_HOOK_PRIORITY, c.priority as u32);
            m.end();
            be(&mut m, NFTA_CHAIN_POLICY, u32::from(c.accept));
            m.attr_str(NFTA_CHAIN_TYPE, c.kind);
            msgs.push(m);
            for r in &c.rules {
                let mut m = nft_msg(
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

/// Replaces (or removes) yunhe's table in the socket's namespace.
pub fn apply(sock: &mut Socket, table: Option<&Table>) -> io::Result<()> {
    sock.request_batch(batch(table))
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
        Table {
            chains: vec![Chain {
                name: "postrouting".into(),
                kind: "nat",
                hook: HOOK_POSTROUTING,
                priority: 100,
                accept: true,
                rules: vec![rule],
            }],
        }
    }

    #[test]
    fn batch_is_framed_and_replaces_the_table() {
        let msgs = batch(Some(&snat_table()));
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
                nft(NFT_MSG_NEWCHAIN),
                nft(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END,
            ]
        );
        // Without a table: only the add/delete pair.
        assert_eq!(batch(None).len(), 4);
    }

    #[test]
    fn batch_begin_names_the_subsystem() {
        let d = batch(None).remove(0).finish(1);
        assert_eq!(&d[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn rule_expressions_encode_in_order() {
        let msgs = batch(Some(&snat_table()));
        let rule = msgs[5].clone().finish(1);
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
        let msgs = batch(Some(&snat_table()));
        let chain = msgs[4].clone().finish(1);
        let r = split(&chain);
        let a = attrs(&r[0].payload[4..]);
        let hook = attrs(a.iter().find(|(t, _)| *t == NFTA_CHAIN_HOOK).unwrap().1);
        assert_eq!(hook[0].1, &HOOK_POSTROUTING.to_be_bytes());
        assert_eq!(hook[1].1, &100u32.to_be_bytes());
        let kind = a.iter().find(|(t, _)| *t == NFTA_CHAIN_TYPE).unwrap().1;
        assert_eq!(kind, b"nat\0");
    }
}
