import FoundationEssentials
import HostSys

/// Path resolution and the file checks done at load time, so that a missing
/// kernel is a config error with a key path rather than a failure mid-boot.
enum Paths {
    /// `path` made absolute against `base` (itself made absolute against the
    /// current directory), with "." and ".." resolved lexically.
    static func absolute(_ path: String, relativeTo base: String) -> String {
        let joined: String
        if path.hasPrefix("/") {
            joined = path
        } else if base.hasPrefix("/") {
            joined = base + "/" + path
        } else {
            joined = FileManager.default.currentDirectoryPath + "/" + base + "/" + path
        }
        var parts: [Substring] = []
        for c in joined.split(separator: "/", omittingEmptySubsequences: true) {
            switch c {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(c)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = path[..<slash]
        return dir.isEmpty ? "/" : String(dir)
    }

    /// Why `path` cannot be read as an input file, or nil if it can.
    static func inputFileProblem(_ path: String, allowEmpty: Bool = true) -> String? {
        guard let st = HostFiles.status(path) else { return "\(path): no such file" }
        if st.kind == .directory { return "\(path): is a directory, not a file" }
        if st.kind != .regular { return "\(path): not a regular file" }
        guard HostFiles.isReadable(path) else { return "\(path): not readable (permission denied)" }
        if !allowEmpty, st.size == 0 { return "\(path): is empty" }
        return nil
    }

    /// Why the VMM cannot connect to a vfio-user server's socket at `path`,
    /// or nil: it must exist (the server listening), be a socket, and be writable.
    static func socketProblem(_ path: String) -> String? {
        guard let st = HostFiles.status(path) else { return "\(path): no such socket (is the vfio-user server running and listening there?)" }
        if st.kind == .directory { return "\(path): is a directory, not a socket" }
        if st.kind == .regular { return "\(path): is a regular file, not a socket" }
        guard HostFiles.isWritable(path) else { return "\(path): not writable (permission denied): connecting needs write permission" }
        return nil
    }

    /// Why the VMM could not create or truncate `path` for writing, or nil.
    static func outputFileProblem(_ path: String) -> String? {
        if let st = HostFiles.status(path) {
            if st.kind == .directory { return "\(path): is a directory, not a file" }
            guard HostFiles.isWritable(path) else { return "\(path): not writable (permission denied)" }
            return nil
        }
        let dir = directory(of: path)
        guard HostFiles.status(dir)?.kind == .directory else {
            return "\(dir): no such directory"
        }
        guard HostFiles.isWritable(dir) else { return "\(dir): not writable (permission denied)" }
        return nil
    }

    /// Why `path` cannot back a `[[disk]]`, or nil: it must be a readable,
    /// non-empty regular file (symlinks followed), and writable unless
    /// `readOnly`.
    static func diskImageProblem(_ path: String, readOnly: Bool) -> String? {
        if let m = inputFileProblem(path, allowEmpty: false) { return m }
        guard !readOnly else { return nil }
        // access(2) rather than the mode bits: as root it passes any mode,
        // but still fails with EROFS on a read-only mount.
        guard let e = HostFiles.writeAccessError(path) else { return nil }
        return notWritable(path, errno: e)
    }

    static func notWritable(_ path: String, errno e: Int32) -> String {
        let why: String
        switch e {
        case Errno.EROFS: why = "on a read-only file system"
        case Errno.EACCES, Errno.EPERM: why = "permission denied"
        case Errno.ETXTBSY: why = "in use as a running program"
        default: why = SysError.message(errno: e)
        }
        return "\(path): not writable (\(why)); set read_only = true to use it read-only"
    }
}
