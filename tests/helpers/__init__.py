"""Test helpers (no tests here): common paths and data, run folders, servers, study builders."""
