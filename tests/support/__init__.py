"""Test and benchmark support: real servers and real Ansible runs."""
