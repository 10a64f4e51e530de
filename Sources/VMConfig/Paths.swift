import Foundation

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
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return "\(path): no such file" }
        if isDir.boolValue { return "\(path): is a directory, not a file" }
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let attributes = try? fm.attributesOfItem(atPath: resolved)
        if let type = attributes?[.type] as? FileAttributeType, type != .typeRegular {
            return "\(path): not a regular file"
        }
        guard fm.isReadableFile(atPath: path) else { return "\(path): not readable (permission denied)" }
        if !allowEmpty, let size = attributes?[.size] as? NSNumber, size.int64Value == 0 {
            return "\(path): is empty"
        }
        return nil
    }

    /// Why the VMM could not create or truncate `path` for writing, or nil.
    static func outputFileProblem(_ path: String) -> String? {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            if isDir.boolValue { return "\(path): is a directory, not a file" }
            guard fm.isWritableFile(atPath: path) else { return "\(path): not writable (permission denied)" }
            return nil
        }
        let dir = directory(of: path)
        guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            return "\(dir): no such directory"
        }
        guard fm.isWritableFile(atPath: dir) else { return "\(dir): not writable (permission denied)" }
        return nil
    }
}
