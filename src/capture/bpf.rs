//! `replay --bpf`: a capture filter in libpcap syntax run over the frames of a file, as `live
//! --bpf` runs it in the kernel. The expression is compiled by libpcap itself (so it means
//! exactly what `tcpdump` makes of it), once per link type met, and run in user space with
//! `pcap_offline_filter`. Only a build with libpcap (`--features live`) has it; the plain
//! build refuses the flag with a line saying how to get it.

/// A compiled filter, ready for any link type.
pub struct Filter {
    expr: String,
    #[cfg(feature = "live")]
    programs: Vec<(i32, Option<pcap::BpfProgram>)>,
}

/// Link type the expression is checked against up front, so a typo is a command-line error
/// before any file is opened.
#[cfg(feature = "live")]
const LINKTYPE_ETHERNET: i32 = 1;

impl Filter {
    /// Compiles `expr`; `Err` is the line to print (a command-line mistake).
    pub fn new(expr: &str) -> Result<Filter, String> {
        #[cfg(feature = "live")]
        {
            let program = compile(expr, LINKTYPE_ETHERNET)
                .map_err(|e| format!("--bpf {expr:?}: {e}; see `man pcap-filter`"))?;
            Ok(Filter {
                expr: expr.to_string(),
                programs: vec![(LINKTYPE_ETHERNET, Some(program))],
            })
        }
        #[cfg(not(feature = "live"))]
        {
            Err(format!(
                "--bpf {expr:?}: this build has no libpcap to compile filters; install \
                 libpcap-dev and build with `--features live`, or filter first with \
                 `tcpdump -r FILE -w - 'EXPR' | pinwatch replay -`"
            ))
        }
    }

    /// Whether the frame passes. A link type the expression cannot be compiled for (`vlan`
    /// on raw IP, say) passes nothing, and says so once.
    #[cfg(feature = "live")]
    pub fn matches(&mut self, linktype: i32, frame: &[u8]) -> bool {
        let at = match self.programs.iter().position(|(lt, _)| *lt == linktype) {
            Some(i) => i,
            None => {
                let program = match compile(&self.expr, linktype) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!(
                            "pinwatch: warning: --bpf {:?} does not apply to link type \
                             {linktype} ({e}); its packets are skipped",
                            self.expr
                        );
                        None
                    }
                };
                self.programs.push((linktype, program));
                self.programs.len() - 1
            }
        };
        self.programs[at]
            .1
            .as_ref()
            .is_some_and(|p| p.filter(frame))
    }

    #[cfg(not(feature = "live"))]
    pub fn matches(&mut self, _: i32, _: &[u8]) -> bool {
        // Unreachable in practice: `new` never succeeds in this build.
        true
    }
}

/// Copies compile their own programs (a program is not shared between threads).
impl Clone for Filter {
    fn clone(&self) -> Filter {
        Filter {
            expr: self.expr.clone(),
            #[cfg(feature = "live")]
            programs: Vec::new(),
        }
    }
}

#[cfg(feature = "live")]
fn compile(expr: &str, linktype: i32) -> Result<pcap::BpfProgram, String> {
    let dead = pcap::Capture::dead(pcap::Linktype(linktype)).map_err(|e| e.to_string())?;
    dead.compile(expr, true).map_err(|e| e.to_string())
}
