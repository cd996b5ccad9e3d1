// In progress: written by the lead in this session.
