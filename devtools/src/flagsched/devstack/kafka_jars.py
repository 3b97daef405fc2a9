"""The Kafka broker jars: fetched once from Maven Central with ``mvn``, then cached.

The jars land in ``{dev_home}/jars/kafka-{KAFKA_VERSION}/libs`` (``devstack/kafka-pom.xml``
names the dependency); a marker file listing every jar makes the cache count only
when the download was complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from flagsched.devstack.process import file_lock
from flagsched.runtime.errors import DevStackError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release the dev stack runs; the only place it is written down."""

SCALA_VERSION = "2.13"
_COMPLETE_MARKER = ".complete"
_POM = Path(__file__).resolve().parent / "kafka-pom.xml"


def jars_dir(dev_home: Path, version: str = KAFKA_VERSION) -> Path:
    """Where the broker jars of ``version`` live under ``dev_home``."""
    return dev_home / "jars" / f"kafka-{version}" / "libs"


def _cache_complete(libs: Path) -> bool:
    marker = libs.parent / _COMPLETE_MARKER
    try:
        names = marker.read_text().split()
    except OSError:
        return False
    return bool(names) and all((libs / name).is_file() for name in names)


def require_tool(name: str, package: str) -> str:
    """The path of a command-line tool, or DevStackError naming the package to install."""
    path = shutil.which(name)
    if path is None:
        raise DevStackError(f"{name} not found: apt-get install {package}")
    return path


def ensure_jars(dev_home: Path, version: str = KAFKA_VERSION) -> Path:
    """Return the directory of the Kafka broker jars, fetching them with Maven if needed.

    A cache counts only when a marker listing every jar is present, so an
    interrupted download is fetched again. Concurrent callers serialise on a lock.
    """
    libs = jars_dir(dev_home, version)
    if _cache_complete(libs):
        return libs
    with file_lock(libs.parent.parent / ".lock", timeout_s=900, what="the jar cache"):
        if _cache_complete(libs):
            return libs
        mvn = require_tool("mvn", "maven")
        require_tool("java", "openjdk-17-jre-headless")
        if not _POM.is_file():
            raise DevStackError(f"{_POM} not found: the dev stack runs from a source checkout")
        staging = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("fetching Kafka %s jars with Maven into %s", version, libs)
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(_POM),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}", f"-Dkafka.version={version}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        main_jar = staging / f"kafka_{SCALA_VERSION}-{version}.jar"
        if done.returncode != 0 or not main_jar.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise DevStackError(f"mvn could not fetch Kafka {version} jars:\n{output}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        names = sorted(p.name for p in libs.glob("*.jar"))
        (libs.parent / _COMPLETE_MARKER).write_text("\n".join(names) + "\n")
        log.info("cached %d Kafka jars in %s", len(names), libs)
    return libs
