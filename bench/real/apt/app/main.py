# The app of bench/build-real.sh's "apt" case; the bench's one-file-changed rebuild rewrites EDIT.
import sys

EDIT = ""

print("berth bench app" + EDIT, "python %d" % sys.version_info[0])
