"""Fair share: per-user limits and budgets, their overrides, and the checks every service
calls before it creates a job, queues a run or launches a cluster."""
