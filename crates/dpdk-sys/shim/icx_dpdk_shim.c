#include "icx_dpdk_shim.h"

#include <assert.h>
#include <stddef.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_udp.h>

/* Pinned to DPDK 22.11: what the Rust side hard-codes or assumes.
 * A different release that changes any of these fails here, at build time. */
_Static_assert(RTE_VER_YEAR == 22 && RTE_VER_MONTH == 11,
               "icx-dpdk-sys is pinned to DPDK 22.11 (set ICX_DPDK_ALLOW_ANY_VERSION "
               "only together with updated asserts)");
_Static_assert(sizeof(struct rte_mbuf) == 128, "rte_mbuf is two cache lines");
_Static_assert(offsetof(struct rte_mbuf, buf_addr) == 0, "rte_mbuf.buf_addr");
_Static_assert(offsetof(struct rte_mbuf, data_off) == 16, "rte_mbuf.data_off");
_Static_assert(offsetof(struct rte_mbuf, nb_segs) == 20, "rte_mbuf.nb_segs");
_Static_assert(offsetof(struct rte_mbuf, ol_flags) == 24, "rte_mbuf.ol_flags");
_Static_assert(offsetof(struct rte_mbuf, pkt_len) == 36, "rte_mbuf.pkt_len");
_Static_assert(offsetof(struct rte_mbuf, data_len) == 40, "rte_mbuf.data_len");
_Static_assert(sizeof(struct rte_ether_addr) == 6, "rte_ether_addr");
_Static_assert(sizeof(struct rte_ether_hdr) == 14, "rte_ether_hdr");
_Static_assert(sizeof(struct rte_ipv4_hdr) == 20, "rte_ipv4_hdr");
_Static_assert(sizeof(struct rte_udp_hdr) == 8, "rte_udp_hdr");
_Static_assert(RTE_PKTMBUF_HEADROOM == 128, "RTE_PKTMBUF_HEADROOM");
/* Flag values mirrored as Rust constants in src/lib.rs (function-like
 * macros such as RTE_BIT64 are invisible to bindgen). */
_Static_assert(RTE_ETH_RX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "rx ipv4 cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "rx udp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "tx ipv4 cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "tx udp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_MULTI_SEGS == (1ULL << 15), "tx multi segs");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_MASK == ((1ULL << 4) | (1ULL << 7)), "rx ip mask");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_BAD == (1ULL << 4), "rx ip bad");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_GOOD == (1ULL << 7), "rx ip good");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_MASK == ((1ULL << 3) | (1ULL << 8)), "rx l4 mask");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_BAD == (1ULL << 3), "rx l4 bad");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_GOOD == (1ULL << 8), "rx l4 good");
_Static_assert(RTE_MBUF_F_TX_UDP_CKSUM == (3ULL << 52), "tx udp");
_Static_assert(RTE_MBUF_F_TX_IP_CKSUM == (1ULL << 54), "tx ip cksum");
_Static_assert(RTE_MBUF_F_TX_IPV4 == (1ULL << 55), "tx ipv4");

int icx_rte_errno(void) { return rte_errno; }

uint32_t icx_rte_version_headers(void) { return RTE_VERSION; }

uint16_t icx_rte_eth_rx_burst(uint16_t port, uint16_t queue,
                              struct rte_mbuf **pkts, uint16_t n) {
  return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t icx_rte_eth_tx_burst(uint16_t port, uint16_t queue,
                              struct rte_mbuf **pkts, uint16_t n) {
  return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *icx_rte_pktmbuf_alloc(struct rte_mempool *mp) {
  return rte_pktmbuf_alloc(mp);
}

int icx_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                               unsigned int count) {
  return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void icx_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *icx_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

char *icx_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) {
  return rte_pktmbuf_append(m, len);
}

uint16_t icx_rte_pktmbuf_tailroom(const struct rte_mbuf *m) {
  return rte_pktmbuf_tailroom(m);
}

uint16_t icx_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }
uint32_t icx_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }
uint16_t icx_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
struct rte_mbuf *icx_rte_pktmbuf_next(const struct rte_mbuf *m) { return m->next; }
uint64_t icx_rte_pktmbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }

void icx_rte_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags,
                                    uint16_t l2_len, uint16_t l3_len) {
  m->ol_flags |= ol_flags;
  m->l2_len = l2_len;
  m->l3_len = l3_len;
}
