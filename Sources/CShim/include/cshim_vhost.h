// vhost-net (linux/vhost.h) and the TAP features it needs (linux/if_tun.h): ioctl
// numbers and flags Swift cannot import, exported as constants for HostSys.
#ifndef SWIFTVMM_CSHIM_VHOST_H
#define SWIFTVMM_CSHIM_VHOST_H

#include <linux/vhost.h>
#include <linux/if_tun.h>

static const unsigned long SHIM_VHOST_GET_FEATURES = VHOST_GET_FEATURES;
static const unsigned long SHIM_VHOST_SET_FEATURES = VHOST_SET_FEATURES;
static const unsigned long SHIM_VHOST_SET_OWNER = VHOST_SET_OWNER;
static const unsigned long SHIM_VHOST_SET_MEM_TABLE = VHOST_SET_MEM_TABLE;
static const unsigned long SHIM_VHOST_SET_VRING_NUM = VHOST_SET_VRING_NUM;
static const unsigned long SHIM_VHOST_SET_VRING_ADDR = VHOST_SET_VRING_ADDR;
static const unsigned long SHIM_VHOST_SET_VRING_BASE = VHOST_SET_VRING_BASE;
static const unsigned long SHIM_VHOST_GET_VRING_BASE = VHOST_GET_VRING_BASE;
static const unsigned long SHIM_VHOST_SET_VRING_KICK = VHOST_SET_VRING_KICK;
static const unsigned long SHIM_VHOST_SET_VRING_CALL = VHOST_SET_VRING_CALL;
static const unsigned long SHIM_VHOST_NET_SET_BACKEND = VHOST_NET_SET_BACKEND;

static const unsigned long SHIM_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
static const unsigned long SHIM_TUNSETOFFLOAD = TUNSETOFFLOAD;
static const unsigned short SHIM_IFF_VNET_HDR = IFF_VNET_HDR;
static const unsigned short SHIM_IFF_MULTI_QUEUE = IFF_MULTI_QUEUE;
static const unsigned SHIM_TUN_F_CSUM = TUN_F_CSUM;
static const unsigned SHIM_TUN_F_TSO4 = TUN_F_TSO4;
static const unsigned SHIM_TUN_F_TSO6 = TUN_F_TSO6;
static const unsigned SHIM_TUN_F_TSO_ECN = TUN_F_TSO_ECN;

#endif
