//! Writes the demo's sample documents (PDF, DOCX, Markdown) into a folder. The text is
//! the project's own.
//!
//! `make-samples --scanned FOLDER` writes a scanned PDF instead (one page that only OCR
//! can read; needs poppler's `pdftoppm`): the image build makes it for `make
//! docker-check`, which shows that OCR works in worker-files' image.

use std::path::PathBuf;

use testkit::fixtures;

const HANDBOOK_PAGES: [&str; 3] = [
    "GlassBox Fleet operator handbook. Chapter one: queues. Every job travels through an SQS queue with its own dead-letter queue. \
     A message is only a wake-up call: the truth lives in Postgres, so a duplicate message does no harm.",
    "Chapter two: retries. Transient failures such as throttling or a restarting database are retried with exponential backoff and jitter. \
     After the fifth receive, SQS moves the message to the dead-letter queue and the file shows dead_lettered.",
    "Chapter three: shutdown. On SIGTERM a worker stops receiving, finishes what it can within one hundred seconds, and releases the rest \
     so another worker can pick it up at once.",
];

const GARDEN_PARAGRAPHS: [&str; 4] = [
    "Community garden rules for the spring season.",
    "Tomatoes need six to eight hours of direct sunlight and deep watering twice a week.",
    "Compost bins are turned every Saturday morning; volunteers sign up on the board by the gate.",
    "Tools go back to the shed before dusk, cleaned and dry.",
];

const RECIPE: &str = "# Lentil soup\n\nA warming soup for cold evenings.\n\n## Ingredients\n\n- red lentils\n- carrots and onions\n- cumin and smoked paprika\n\n\
## Method\n\nSweat the onions, add the spices, then simmer the lentils in stock for twenty minutes until soft. Blend half for a creamy texture.\n";

/// The scanned sample's one page.
const HARBOUR_NOTICE: &str = "Harbour notice. The copper lantern on the north pier shows a violet light when the \
     falcon ferry is delayed by fog. Fishing boats wait inside the granite breakwater until it turns white again.";

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let scanned = args.first().is_some_and(|arg| arg == "--scanned");
    if scanned {
        args.remove(0);
    }
    let folder = PathBuf::from(args.first().cloned().unwrap_or_else(|| "samples".into()));
    std::fs::create_dir_all(&folder)?;
    if scanned {
        std::fs::write(
            folder.join("harbour-notice-scanned.pdf"),
            fixtures::scanned_pdf(&[HARBOUR_NOTICE]),
        )?;
        println!("{}", folder.display());
        return Ok(());
    }
    std::fs::write(
        folder.join("operator-handbook.pdf"),
        fixtures::pdf_from_pages(&HANDBOOK_PAGES),
    )?;
    std::fs::write(
        folder.join("garden-rules.docx"),
        fixtures::docx_from_paragraphs(&GARDEN_PARAGRAPHS),
    )?;
    std::fs::write(folder.join("lentil-soup.md"), RECIPE)?;
    println!("{}", folder.display());
    Ok(())
}
