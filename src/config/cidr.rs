//! IPv4 CIDR blocks: the VPC's, its subnets' and the API endpoint's allowed sources.

use super::*;

/// An IPv4 CIDR block such as `10.0.0.0/16`.
///
/// Parsing accepts host bits (`10.0.0.1/16`) so that validation can say which network was
/// meant; [`Ipv4Cidr::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    /// The address; for a well-formed block, the network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// Why a string is not an IPv4 CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an IPv4 CIDR block ({reason}); write it like 10.0.0.0/16")]
pub struct ParseCidrError {
    input: String,
    reason: &'static str,
}

impl Ipv4Cidr {
    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The block with its host bits cleared (`10.0.0.1/16` -> `10.0.0.0/16`).
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & Self::mask(self.prefix)),
            prefix: self.prefix,
        }
    }

    /// Block number `index` of size `/new_prefix` inside this block, or `None` if
    /// `new_prefix` is shorter than this block's prefix or longer than 32, or `index` is
    /// past the last block.
    pub fn subnet(&self, new_prefix: u8, index: u32) -> Option<Ipv4Cidr> {
        if new_prefix < self.prefix || new_prefix > 32 {
            return None;
        }
        let count = 1u64 << (new_prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let offset = (u64::from(index) << (32 - new_prefix)) as u32;
        Some(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.network().addr) + offset),
            prefix: new_prefix,
        })
    }

    /// Whether every address of `other` is inside this block.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.addr) & Self::mask(self.prefix) == u32::from(self.network().addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseCidrError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| fail("no /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| fail("bad address"))?;
        // u8's parser would accept "+8" and "08".
        if prefix.is_empty()
            || prefix.len() > 2
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() == 2 && prefix.starts_with('0'))
        {
            return Err(fail("the prefix must be a number from 0 to 32"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| fail("bad prefix"))?;
        if prefix > 32 {
            return Err(fail("the prefix must be a number from 0 to 32"));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
