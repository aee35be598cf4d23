//! Pure rendering of post text, review replies and button attachments.
