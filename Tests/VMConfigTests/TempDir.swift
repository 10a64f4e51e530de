import Foundation

/// A fresh directory under the system temp dir, removed on deinit.
final class TempDir {
    let path: String

    init() throws {
        let base = NSTemporaryDirectory()
        path = (base as NSString).appendingPathComponent("vmconfig-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `contents` to `name` (relative to the dir) and returns its absolute path.
    @discardableResult
    func file(_ name: String, _ contents: String = "x") throws -> String {
        let p = (path as NSString).appendingPathComponent(name)
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(contents.utf8).write(to: URL(fileURLWithPath: p))
        return p
    }

    func dir(_ name: String) throws -> String {
        let p = (path as NSString).appendingPathComponent(name)
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}
