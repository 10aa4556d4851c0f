"""Small pieces of Spark configuration shared by notebook kernels and local clusters."""


def log4j2_properties(level: str) -> str:
    """A log4j2.properties that sends Spark's log at ``level`` and above to stderr.

    ``level`` is a log4j level name: "error" keeps notebook outputs clean, "warn" suits
    the logs of cluster daemons.
    """
    return f"""\
# Spark logging at {level} and above, to stderr (written by the portal).
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n
"""
