/* The DPDK surface icx uses: the headers bindgen reads, plus callable
 * wrappers for DPDK's static inline functions and macros (which have no
 * symbol in the shared libraries). */
#ifndef ICX_DPDK_SHIM_H
#define ICX_DPDK_SHIM_H

#include <stdint.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_dev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>

/* rte_errno of the calling thread (a per-lcore TLS macro in C). */
int icx_rte_errno(void);
/* The RTE_VERSION of the headers the shim was built against, and the
 * library's at run time (rte_version() is a string). */
uint32_t icx_rte_version_headers(void);

uint16_t icx_rte_eth_rx_burst(uint16_t port, uint16_t queue,
                              struct rte_mbuf **pkts, uint16_t n);
uint16_t icx_rte_eth_tx_burst(uint16_t port, uint16_t queue,
                              struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *icx_rte_pktmbuf_alloc(struct rte_mempool *mp);
int icx_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                               unsigned int count);
void icx_rte_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_mtod(m, void *) */
void *icx_rte_pktmbuf_mtod(struct rte_mbuf *m);
/* NULL when the first segment's tailroom is short. */
char *icx_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint16_t icx_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t icx_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t icx_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t icx_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
struct rte_mbuf *icx_rte_pktmbuf_next(const struct rte_mbuf *m);
uint64_t icx_rte_pktmbuf_ol_flags(const struct rte_mbuf *m);
/* Sets ol_flags, l2_len and l3_len (bitfields) for checksum offload. */
void icx_rte_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags,
                                    uint16_t l2_len, uint16_t l3_len);

#endif
