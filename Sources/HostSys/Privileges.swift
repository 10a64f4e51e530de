import CShim
import Glibc

/// The VMM's own privileges: once setup is done it needs none (everything it
/// uses from then on is a descriptor it holds), so it gives them up.
public enum Privileges {
    /// Capability sets of the calling thread, as masks by capability number.
    public struct Capabilities: Equatable, Sendable {
        public var effective: UInt64, permitted: UInt64, inheritable: UInt64, ambient: UInt64, bounding: UInt64
        public init(effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0, ambient: UInt64 = 0,
                    bounding: UInt64 = 0) {
            self.effective = effective
            self.permitted = permitted
            self.inheritable = inheritable
            self.ambient = ambient
            self.bounding = bounding
        }
        /// None in any set that can be used or regained.
        public var isEmpty: Bool { effective | permitted | inheritable | ambient | bounding == 0 }
    }

    public static func capabilities() throws -> Capabilities {
        var c = shim_caps()
        guard shim_caps_read(&c) == 0 else { throw SysError.last("capget") }
        return Capabilities(effective: c.effective, permitted: c.permitted, inheritable: c.inheritable,
                            ambient: c.ambient, bounding: c.bounding)
    }

    /// The names of the capabilities in `mask` (linux/capability.h), lower case
    /// as capabilities(7) and getpcaps write them.
    public static func names(_ mask: UInt64) -> [String] {
        (0..<64).filter { mask & (1 << UInt64($0)) != 0 }.map { $0 < capabilityNames.count ? capabilityNames[$0] : "cap_\($0)" }
    }

    /// linux/capability.h, CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40).
    static let capabilityNames = [
        "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
        "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
        "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module",
        "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot",
        "cap_sys_nice", "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
        "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog",
        "cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
    ]
    public static let ipcLock = 14

    /// What `dropAll` did.
    public struct Report: Sendable {
        public let uid: UInt32, euid: UInt32
        /// The effective set before the drop (what the VMM could use).
        public let effectiveBefore: UInt64
        /// RLIMIT_MEMLOCK after the drop: nil is unlimited.
        public let memlockLimit: UInt64?
        /// Raised to unlimited (CAP_SYS_RESOURCE allows it) because
        /// CAP_IPC_LOCK, which let iommufd pin memory past it, was about to go.
        public let memlockRaised: Bool
        /// Other threads the process had: the drop is per thread, so those
        /// keep what they held (the seccomp filter still binds them).
        public let otherThreads: Int

        public init(uid: UInt32, euid: UInt32, effectiveBefore: UInt64, memlockLimit: UInt64?, memlockRaised: Bool,
                    otherThreads: Int) {
            self.uid = uid
            self.euid = euid
            self.effectiveBefore = effectiveBefore
            self.memlockLimit = memlockLimit
            self.memlockRaised = memlockRaised
            self.otherThreads = otherThreads
        }
    }

    /// Gives up every capability for good and sets no_new_privs, on the
    /// calling thread and so on every thread it starts afterwards. First, if
    /// the thread may pin memory without limit (CAP_IPC_LOCK), RLIMIT_MEMLOCK
    /// is raised to unlimited when it may be, so that what iommufd pins for a
    /// vIOMMU later (charged to the limit once the capability is gone:
    /// iopt_alloc_pages checks CAP_IPC_LOCK at each map) keeps working; an unprivileged
    /// VMM lives within the limit its launcher gave it (`ulimit -l`).
    public static func dropAll() throws -> Report {
        let before = try capabilities()
        var raised = false
        if before.effective & (1 << UInt64(ipcLock)) != 0 {
            // Needs CAP_SYS_RESOURCE too; without it the limit stays (and says so).
            var now: UInt64 = 0
            if shim_memlock_limit(&now) == 0, now != UInt64.max, shim_memlock_unlimited() == 0 { raised = true }
        }
        guard shim_caps_drop_all() == 0 else { throw SysError.last("drop capabilities (prctl PR_CAPBSET_DROP, capset)") }
        guard shim_set_no_new_privs() == 0 else { throw SysError.last("prctl PR_SET_NO_NEW_PRIVS") }
        let after = try capabilities()
        guard after.isEmpty else {
            throw SysError(errno: EPERM, operation: "capabilities still held after the drop: "
                + names(after.effective | after.permitted | after.bounding | after.ambient).joined(separator: ", "))
        }
        var limit = UInt64.max
        _ = shim_memlock_limit(&limit)
        return Report(uid: getuid(), euid: geteuid(), effectiveBefore: before.effective,
                      memlockLimit: limit == UInt64.max ? nil : limit,
                      memlockRaised: raised, otherThreads: otherThreadCount())
    }

    /// Threads of this process other than the caller (/proc/self/task).
    static func otherThreadCount() -> Int {
        guard let dir = opendir("/proc/self/task") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != ".", name != ".." { n += 1 }
        }
        return max(0, n - 1)
    }
}
