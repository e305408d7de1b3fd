# In Colab: a git URL (https://.../genjax.git, optionally @branch) or the path of an
# uploaded archive (genjax.zip / .tar.gz) of the repository. Unused inside a clone.
GENJAX_SOURCE = ""

# Setup, the same in every notebook of colabs/ (colabs/setup_cell.py; see
# colabs/README.md). Inside a clone of the repository nothing is installed:
# the clone goes on sys.path and becomes the working directory. In Colab the
# repository comes from GENJAX_SOURCE and is installed with pip install -e.
# Defines REPO_ROOT, SHARED_DATA (the datasets directory, or None) and IN_COLAB.
import os
import sys


class GenjaxSetupError(Exception):
    """Stops the notebook with a one-line message."""

    def _render_traceback_(self):  # IPython and Colab show this, not a traceback.
        return [f"GenjaxSetupError: {self}"]


def _genjax_setup(source):
    import importlib.metadata
    import importlib.util
    import re
    import shutil
    import subprocess
    import tarfile
    import textwrap
    import zipfile

    in_colab = "google.colab" in sys.modules or any(k.startswith("COLAB_") for k in os.environ)
    # Tests: print pip's command instead of running it, and do not import genjax.
    dry_run = os.environ.get("GENJAX_SETUP_DRY_RUN", "") not in ("", "0")

    def is_clone(path):
        return (os.path.isfile(os.path.join(path, "setup.py"))
                and os.path.isfile(os.path.join(path, "genjax", "__init__.py")))

    def clone_above(path):
        while not is_clone(path):
            if os.path.dirname(path) == path:
                return None
            path = os.path.dirname(path)
        return path

    def masked(text):  # No token of a private URL (https://TOKEN@host/...) in the output.
        return re.sub(r"(://)[^/@]+@", r"\1***@", text)

    def run(cmd, what):
        print("+", masked(" ".join(cmd)), flush=True)
        if dry_run and what == "pip install":
            print("GENJAX_SETUP_DRY_RUN is set: pip not run")
        elif subprocess.run(cmd).returncode != 0:
            raise GenjaxSetupError(f"{what} failed (its messages are above); "
                                   f"check GENJAX_SOURCE = {masked(repr(source))}")

    def fetch(dest):
        """The repository named by GENJAX_SOURCE, in dest; True if it is new."""
        if is_clone(dest):
            print(f"using {dest}, fetched before (delete it to fetch GENJAX_SOURCE again)")
            return dest, False
        if os.path.exists(dest):
            raise GenjaxSetupError(f"{dest} exists but is not a genjax repository; move it away")
        path = os.path.abspath(os.path.expanduser(source))
        if os.path.isdir(path):  # e.g. a copy on a mounted Google Drive
            if not is_clone(path):
                raise GenjaxSetupError(f"GENJAX_SOURCE: {path} holds no setup.py and genjax/")
            return path, True
        if source.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            if not os.path.isfile(path):
                raise GenjaxSetupError(f"GENJAX_SOURCE: no file {path}; upload the archive "
                                       "(Files pane) or correct the path")
            print(f"unpacking {path} into {dest}")
            tmp = dest + ".unpacking"
            shutil.rmtree(tmp, ignore_errors=True)
            if path.lower().endswith(".zip"):
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
            else:
                with tarfile.open(path) as archive:
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    archive.extractall(tmp, **safe)
            # The files at the top (git archive) or in one folder (GitHub's zip).
            tops = [tmp] + [os.path.join(tmp, d) for d in sorted(os.listdir(tmp))]
            top = next((d for d in tops if is_clone(d)), None)
            if top is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise GenjaxSetupError(f"{path} holds no setup.py and genjax/ (at its top "
                                       "or one folder down); make it with git archive")
            os.replace(top, dest)
            shutil.rmtree(tmp, ignore_errors=True)
            return dest, True
        if not re.match(r"(https?|git|ssh|file)://|[\w.-]+@[\w.-]+:", source):
            raise GenjaxSetupError(f"GENJAX_SOURCE = {masked(repr(source))} is neither a git "
                                   "URL nor an archive (.zip, .tar.gz) nor a directory")
        url, ref = re.fullmatch(r"(.+?)(?:(?<=\.git)@([^@]+))?", source).groups()
        run(["git", "clone", "--depth=1"] + (["--branch", ref] if ref else []) + [url, dest],
            "git clone")
        return dest, True

    # 1. The repository: a clone around the working directory (a notebook
    # opened from <clone>/colabs), else GENJAX_SOURCE, else (outside Colab)
    # the checkout that an installed genjax comes from.
    root, new = clone_above(os.getcwd()), False
    if root is not None and source:
        print(f"GENJAX_SOURCE is not used: the working directory is in the clone {root}")
    elif source:
        root, new = fetch(os.path.abspath("genjax"))
    elif not in_colab:
        spec = importlib.util.find_spec("genjax")
        checkout = spec and spec.origin and os.path.dirname(os.path.dirname(spec.origin))
        root = checkout if checkout and is_clone(checkout) else None
    if root is None:
        print(textwrap.fill(
            "This notebook needs the genjax repository, and there is no clone here. "
            "Set GENJAX_SOURCE at the top of this cell to your fork's git URL "
            "(https://github.com/YOU/genjax.git, optionally @branch), or, in a clone, "
            "make an archive with `git archive -o genjax.zip HEAD`, upload it (Files "
            "pane) and set GENJAX_SOURCE = \"/content/genjax.zip\"; then run this cell "
            "again. Outside Colab, open the notebook from a clone's colabs/ folder."))
        raise GenjaxSetupError("no genjax repository: set GENJAX_SOURCE in the first code cell")
    root = os.path.realpath(root)

    # 2. Install only what was fetched, or in Colab a clone pip does not know yet.
    try:
        importlib.metadata.distribution("genjax-research")
        known = True
    except importlib.metadata.PackageNotFoundError:
        known = False
    if new or (in_colab and not known):
        run([sys.executable, "-m", "pip", "install", "-q", "-e", root], "pip install")
    else:
        print(f"using the clone {root}; nothing installed")
    # pip's editable install reaches new interpreters only; this one gets the path.
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    if os.path.realpath(os.getcwd()) != root:
        os.chdir(root)

    # 3. The datasets (MNIST, Tiny Shakespeare, ...): GENJAX_SHARED_DATA if set,
    # else shared/data beside the clone; None if that is not a directory.
    shared = os.environ.get("GENJAX_SHARED_DATA") or os.path.join(
        os.path.dirname(root), "shared", "data")
    shared = os.path.abspath(shared) if os.path.isdir(shared) else None

    version = "(not imported: dry run)"
    if not dry_run:
        try:
            import genjax
        except ImportError as err:
            raise GenjaxSetupError(f"genjax in {root} does not import ({err}); "
                                   f"install its requirements: pip install -e {root}") from None
        if os.path.dirname(os.path.dirname(os.path.realpath(genjax.__file__))) != root:
            raise GenjaxSetupError(f"another genjax is imported ({genjax.__file__}); "
                                   "restart the runtime and run this cell first")
        version = genjax.__version__
    print(f"genjax {version} from {root}; shared data: {shared}; Colab: {in_colab}")
    return root, shared, in_colab


REPO_ROOT, SHARED_DATA, IN_COLAB = _genjax_setup(GENJAX_SOURCE.strip())
del _genjax_setup
