#!/usr/bin/python3
"""A real RTSP server (GStreamer's gst-rtsp-server) serving one H.264 MP4 file, for the tests.

Run with the SYSTEM python (python3-gi and gir1.2-gst-rtsp-server-1.0 are Debian packages,
not in the venv):  /usr/bin/python3 tests/rtsp_serve.py PORT MOUNT FILE [USER PASSWORD]

The file is streamed as it is (no transcoding: qtdemux ! h264parse ! rtph264pay), at its own
frame rate, looping. Prints "READY rtsp://127.0.0.1:PORT/MOUNT" once it listens.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port, mount, path = sys.argv[1], sys.argv[2], sys.argv[3]
    user, password = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse ! '
                       'rtph264pay name=pay0 pt=96 config-interval=1 )')
    factory.set_shared(True)
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/" + mount.lstrip("/"), factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        return 1
    print(f"READY rtsp://127.0.0.1:{port}/{mount.lstrip('/')}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
