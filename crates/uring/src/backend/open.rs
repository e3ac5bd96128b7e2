//! Opening the backend: the ring, every link's sockets, and the probes
//! and fallbacks of each feature.

use super::*;

impl UringBackend {
    pub(crate) fn open(cfg: UringConfig) -> Result<Self, OpenError> {
        let bad = |why: String| OpenError::Other(io::Error::new(io::ErrorKind::InvalidInput, why));
        if cfg.max_batch == 0 || cfg.tx_slots == 0 || cfg.max_udp_payload == 0 {
            return Err(bad(
                "max_batch, tx_slots and max_udp_payload must be > 0".into()
            ));
        }
        let (ring, setup_mode, ops) = setup::open_ring(&cfg)?;
        if setup_mode != SetupMode::DeferTaskrun && cfg.ring_setup == crate::RingSetup::Best {
            tracing::info!(setup = %setup_mode, "io_uring: SINGLE_ISSUER|DEFER_TASKRUN unavailable, using weaker setup flags");
        }

        let scfg = cfg.socket_config();
        scfg.validate().map_err(OpenError::Other)?;
        // Per link: its socket and its urgent lane's on the same address,
        // configured alike.
        let mut bound = Vec::with_capacity(scfg.link_count());
        for k in 0..scfg.link_count() {
            let lc = scfg.for_link(k).expect("k < link_count");
            let sock = bind_socket(&lc)
                .map_err(|e| OpenError::Other(with_context(e, format_args!("link {k}"))))?;
            set_blocking(sock.fd.as_raw_fd());
            let urgent = if lc.lanes() > 1 {
                match bind_urgent(&lc, sock.addr) {
                    Ok(u) => {
                        set_blocking(u.fd.as_raw_fd());
                        Some(u)
                    }
                    Err(e) => {
                        tracing::warn!(addr = %sock.addr, link = k, error = %e, "io_uring: no urgent lane (heartbeats share the block socket's queue)");
                        None
                    }
                }
            } else {
                None
            };
            bound.push((sock, urgent));
        }
        let raw = bound[0].0.fd.as_raw_fd();
        let (recv_grant, send_grant) = (bound[0].0.recv_buffer, bound[0].0.send_buffer);

        // GSO
        let gso = if !cfg.gso {
            tracing::info!("io_uring: GSO off by configuration: one datagram per frame");
            false
        } else if let Err(e) = setup::probe_gso(raw) {
            tracing::info!(error = %e, "io_uring: UDP_SEGMENT (GSO) not supported: one datagram per frame");
            false
        } else {
            true
        };
        // GRO
        let gro = if !cfg.gro {
            tracing::info!("io_uring: GRO off by configuration");
            false
        } else if let Err(e) = setup::enable_gro(raw) {
            tracing::info!(error = %e, "io_uring: UDP_GRO not supported: datagrams arrive one by one");
            false
        } else {
            true
        };
        if gro {
            // GRO on every other socket too (a NIC's GRO looks the socket
            // up by the flow hash alone, and would not coalesce a block flow
            // that hashes to a socket without it). A socket that refuses
            // gets datagrams one by one, which its receive handles alike.
            for (i, (sock, urgent)) in bound.iter().enumerate() {
                let fds = std::iter::once(&sock.fd).chain(urgent.as_ref().map(|u| &u.fd));
                for fd in fds.skip(usize::from(i == 0)) {
                    if let Err(e) = setup::enable_gro(fd.as_raw_fd()) {
                        tracing::debug!(link = i, error = %e, "io_uring: UDP_GRO refused on a socket");
                    }
                }
            }
        }
        let rx_payload = cfg.rx_payload(gro);
        let rx_count = cfg.rx_count(gro);

        // Receive path
        let mut multishot = cfg.multishot;
        if !cfg.multishot {
            tracing::info!(
                "io_uring: multishot receive off by configuration: single-shot receives"
            );
        } else if !ops.multishot_recvmsg {
            tracing::info!(
                "io_uring: kernel older than 6.0 (no multishot RECVMSG): single-shot receives"
            );
            multishot = false;
        }
        // Each lane's buffer ring is a group of its own: BGID + its index.
        let mut lanes = Vec::with_capacity(2 * bound.len());
        let mut links = Vec::with_capacity(bound.len());
        for (k, (sock, urgent)) in bound.into_iter().enumerate() {
            let mut link = LinkSocks {
                addr: sock.addr,
                v6: sock.addr.is_ipv6(),
                device: sock.device,
                normal: lanes.len(),
                urgent: None,
            };
            let sockets = std::iter::once((sock.fd, Lane::Normal, rx_count))
                .chain(urgent.map(|u| (u.fd, Lane::Urgent, URGENT_RX_BUFFERS)));
            for (fd, lane, count) in sockets {
                let bgid = BGID + lanes.len() as u16;
                let rx = Self::lane_rx(&ring, &mut multishot, count, rx_payload, bgid)?;
                if lane == Lane::Urgent {
                    link.urgent = Some(lanes.len());
                }
                lanes.push(RxLane {
                    socket: fd,
                    rx,
                    stash: VecDeque::new(),
                    cursor: None,
                    count,
                    link: k as u8,
                    lane,
                });
            }
            links.push(link);
        }
        let urgent_lane = links.iter().all(|l| l.urgent.is_some());

        // Zero copy
        let (zc_on, auto, threshold) = match cfg.zero_copy {
            ZeroCopy::Off => {
                tracing::info!("io_uring: SEND_ZC off by configuration: copying sends");
                (false, false, usize::MAX)
            }
            ZeroCopy::Auto => (true, true, DEFAULT_ZC_THRESHOLD),
            ZeroCopy::Threshold(t) => (true, false, t),
        };
        let zc_on = if zc_on && !ops.sendmsg_zc {
            tracing::info!("io_uring: kernel without SENDMSG_ZC (older than 6.1): copying sends");
            false
        } else {
            zc_on
        };

        let cq = ring.params().cq_entries() as usize;
        // Room for every completion the CQ can hold, in any lane: reaping
        // never allocates.
        for l in &mut lanes {
            l.stash.reserve(cq);
        }
        let features = Features {
            setup: setup_mode,
            multishot,
            gso,
            gro,
            zero_copy: zc_on,
            zc_threshold: threshold,
            registered_buffers: false,
            busy_poll: cfg.busy_poll,
        };
        tracing::debug!(addr = %links[0].addr, links = links.len(), ?features, lanes = lanes.len(), "io_uring backend bound");
        Ok(UringBackend {
            disabled: setup_mode == SetupMode::DeferTaskrun,
            ring,
            lanes,
            links,
            urgent_lane,
            rotation: RxRotation::default(),
            features,
            rx_payload,
            tx: TxSlab::new(cfg.tx_slots, cfg.tx_frames),
            zc: ZcState {
                on: zc_on,
                auto,
                threshold,
                copied_run: 0,
                max_pages: ZC_MAX_PAGES,
            },
            stash_cap: cq,
            started: false,
            wake: OnceLock::new(),
            wake_armed: false,
            pool: None,
            stats: UringStats {
                recv_buffer: recv_grant,
                send_buffer: send_grant,
                ..UringStats::default()
            },
            warned: Warned::default(),
            cfg,
        })
    }
}
